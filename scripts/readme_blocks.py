"Print the ```python blocks of a README as one script (for scripts/wheel_check.sh)."
import re, sys
text = open(sys.argv[1]).read()
print("\n\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S)))
