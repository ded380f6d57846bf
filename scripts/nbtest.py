"Run `nbdev-test` (arguments passed on) and close with a plain `N passed, N failed` line for the notebooks."
import subprocess, sys
from nbdev.doclinks import nbglob

def main():
    nbs = [p for p in nbglob('nbs', as_path=True) if not p.name.startswith('_')]
    proc = subprocess.Popen(['nbdev-test', '--timing', *sys.argv[1:]], stderr=subprocess.PIPE, text=True)
    err = []
    for line in proc.stderr:
        sys.stderr.write(line); err.append(line)
    rc = proc.wait()
    failed = {l.strip() for l in err if l.startswith('\t')} if rc else set()
    if rc and not failed: failed = {'(nbdev-test itself)'}
    print(f'notebooks: {len(nbs) - len(failed & {p.name for p in nbs})} passed, {len(failed)} failed')
    sys.exit(rc)

if __name__ == '__main__': main()
