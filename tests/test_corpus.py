"""The adversarial corpus, part 1: configs and data files. Each case asserts the exact outcome: exit status 2 and the
one-line message naming the key, column or file (generated once from the behaviour, then reviewed)."""
import json, re
import pytest
import yaml
from llmnb.cli import main

BASE = {'base_model': 'smollm2-135m-instruct', 'input_features': [{'name': 'q', 'type': 'text'}], 'output_features': [{'name': 'a', 'type': 'text'}]}

def merge(d, o):
    d = json.loads(json.dumps(d))
    for k, v in o.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict): d[k] = merge(d[k], v)
        elif v is None and k in d: d.pop(k)
        else: d[k] = v
    return d

def run_cli(capsys, *argv):
    try: main([str(a) for a in argv]); rc = 0
    except SystemExit as e: rc = e.code
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip() and not re.search(r"\d+%\|", l)]
    return rc, err

# (config overrides, the whole error output: the first line carries the prefix; more lines = more problems)
CONFIG_CASES = {
    'gen_force_words': ({'generation': {'force_words_ids': [[5]]}},
        ["llmnb render-config: error: generation.force_words_ids: constrained beam search is not part of transformers 5 (it moved to code on the Hub, which llmnb does not run) (got [[5]]); allowed: null"]),
    'base_model_empty': ({'base_model': ''},
        ["llmnb render-config: error: base_model: must not be empty; allowed: a preset (e.g. 'smollm2-135m-instruct'), a Hub id 'org/name', or an existing local folder or .gguf file"]),
    'prompt_width': ({'prompt': {'template': 'Q: {q:999999999999.2f}'}},
        ["llmnb render-config: error: prompt.template: field {q:999999999999.2f} asks for a width or precision over 1000; allowed: at most 1000 (got 'Q: {q:999999999999.2f}')"]),
    'adapter_type': ({'adapter': {'type': 'loar'}},
        ["llmnb render-config: error: adapter.type: unknown type (got 'loar'); allowed: 'lora', 'adalora', 'ia3', 'prompt_tuning', 'vera', 'loha', 'lokr', 'fourierft', 'boft', 'tinylora', 'c3a', 'oft', 'hra', 'waveft', 'ln_tuning', 'vblora'"]),
    'adapter_r_zero': ({'adapter': {'type': 'lora', 'r': 0}},
        ['llmnb render-config: error: adapter.r: must be an integer >= 1 (got 0)']),
    'adapter_r_str': ({'adapter': {'type': 'lora', 'r': 'eight'}},
        ["llmnb render-config: error: adapter.r: must be an integer (got 'eight')"]),
    'adapter_dropout_neg': ({'adapter': {'type': 'lora', 'dropout': -0.1}},
        ['llmnb render-config: error: adapter.dropout: must be a number >= 0 (got -0.1)']),
    'adapter_dropout_big': ({'adapter': {'type': 'lora', 'dropout': 1.5}},
        ['llmnb render-config: error: adapter.dropout: must be a number <= 1 (got 1.5)']),
    'adapter_alpha_neg': ({'adapter': {'type': 'lora', 'alpha': -1}},
        ['llmnb render-config: error: adapter.alpha: must be an integer >= 1 (got -1)']),
    'adapter_unknown_key': ({'adapter': {'type': 'lora', 'rank': 8}},
        ['llmnb render-config: error: adapter.rank: unknown key; allowed: type, r, alpha, dropout, target_modules, use_rslora, use_dora, bias_type, pretrained_adapter_weights, postprocessor, loraplus_lr_ratio, init_lora_weights, eva_config, loftq_config, rank_pattern, alpha_pattern, layer_replication']),
    'adapter_bias': ({'adapter': {'type': 'lora', 'bias': 'some'}},
        ["llmnb render-config: error: adapter.bias: unknown key; did you mean 'bias_type'?"]),
    'trainer_type': ({'trainer': {'type': 'finetun'}},
        ["llmnb render-config: error: trainer.type: unknown type (got 'finetun'); allowed: 'finetune', 'none', 'dpo', 'kto', 'orpo', 'grpo'"]),
    'trainer_epochs_neg': ({'trainer': {'type': 'finetune', 'epochs': -1}},
        ['llmnb render-config: error: trainer.epochs: must be an integer >= 1 (got -1)']),
    'trainer_epochs_str': ({'trainer': {'type': 'finetune', 'epochs': 'ten'}},
        ["llmnb render-config: error: trainer.epochs: must be an integer (got 'ten')"]),
    'trainer_lr_neg': ({'trainer': {'type': 'finetune', 'learning_rate': -0.1}},
        ['llmnb render-config: error: trainer.learning_rate: must be a number > 0 (got -0.1)']),
    'trainer_lr_str': ({'trainer': {'type': 'finetune', 'learning_rate': 'fast'}},
        ["llmnb render-config: error: trainer.learning_rate: must be a number (got 'fast')"]),
    'trainer_bs_zero': ({'trainer': {'type': 'finetune', 'batch_size': 0}},
        ["llmnb render-config: error: trainer.batch_size: invalid value (got 0); allowed: an integer >= 1 or 'auto'"]),
    'trainer_bs_neg': ({'trainer': {'type': 'finetune', 'batch_size': -5}},
        ["llmnb render-config: error: trainer.batch_size: invalid value (got -5); allowed: an integer >= 1 or 'auto'"]),
    'trainer_bs_str': ({'trainer': {'type': 'finetune', 'batch_size': 'big'}},
        ["llmnb render-config: error: trainer.batch_size: invalid value (got 'big'); allowed: an integer or 'auto'"]),
    'trainer_gas_zero': ({'trainer': {'type': 'finetune', 'gradient_accumulation_steps': 0}},
        ["llmnb render-config: error: trainer.gradient_accumulation_steps: invalid value (got 0); allowed: an integer >= 1 or 'auto'"]),
    'trainer_unknown': ({'trainer': {'type': 'finetune', 'epoch': 3}},
        ["llmnb render-config: error: trainer.epoch: unknown key; did you mean 'epochs'?"]),
    'trainer_optimizer': ({'trainer': {'type': 'finetune', 'optimizer': {'type': 'adamm'}}},
        ["llmnb render-config: error: trainer.optimizer.type: invalid value (got 'adamm'); allowed: 'adamw', 'adam', 'sgd', 'adagrad', 'adadelta', 'adamax', 'rmsprop', 'nadam', 'radam', 'adamw_8bit', 'paged_adamw', 'paged_adamw_8bit', 'adam_8bit', 'paged_adam', 'paged_adam_8bit', 'lion', 'lion_8bit', 'paged_lion', 'paged_lion_8bit', 'sgd_8bit', 'adagrad_8bit', 'rmsprop_8bit', 'lamb', 'lamb_8bit', 'lars', 'lars_8bit' or 'adafactor'"]),
    'trainer_scheduler': ({'trainer': {'type': 'finetune', 'learning_rate_scheduler': {'decay': 'cosin'}}},
        ["llmnb render-config: error: trainer.learning_rate_scheduler.decay: invalid value (got 'cosin'); allowed: 'cosine', 'linear', 'constant', 'exponential', 'one_cycle', 'inverse_sqrt', 'polynomial' or 'wsd'"]),
    'quant_bits': ({'quantization': {'bits': 3}},
        ['llmnb render-config: error: quantization.bits: invalid value (got 3); allowed: 4 or 8']),
    'quant_bits_str': ({'quantization': {'bits': 'four'}},
        ["llmnb render-config: error: quantization.bits: invalid value (got 'four'); allowed: 4 or 8"]),
    'quant_type': ({'quantization': {'bits': 4, 'bnb_4bit_quant_type': 'nf5'}},
        ["llmnb render-config: error: quantization.bnb_4bit_quant_type: invalid value (got 'nf5'); allowed: 'fp4' or 'nf4'"]),
    'quant_compute': ({'quantization': {'bits': 4, 'bnb_4bit_compute_dtype': 'float8'}},
        ["llmnb render-config: error: quantization.bnb_4bit_compute_dtype: invalid value (got 'float8'); allowed: 'float32', 'float16' or 'bfloat16'"]),
    'gen_temp_neg': ({'generation': {'temperature': -1}},
        ['llmnb render-config: error: generation.temperature: must be a number >= 0 (got -1)']),
    'gen_topp_big': ({'generation': {'top_p': 1.5}},
        ['llmnb render-config: error: generation.top_p: must be a number <= 1 (got 1.5)']),
    'gen_topk_neg': ({'generation': {'top_k': -3}},
        ['llmnb render-config: error: generation.top_k: must be an integer >= 0 (got -3)']),
    'gen_mnt_zero': ({'generation': {'max_new_tokens': 0}},
        ['llmnb render-config: error: generation.max_new_tokens: must be an integer >= 1 (got 0)']),
    'gen_mnt_neg': ({'generation': {'max_new_tokens': -8}},
        ['llmnb render-config: error: generation.max_new_tokens: must be an integer >= 1 (got -8)']),
    'gen_mnt_str': ({'generation': {'max_new_tokens': 'many'}},
        ["llmnb render-config: error: generation.max_new_tokens: must be an integer (got 'many')"]),
    'gen_beams_zero': ({'generation': {'num_beams': 0}},
        ['llmnb render-config: error: generation.num_beams: must be an integer >= 1 (got 0)']),
    'gen_unknown': ({'generation': {'temprature': 0.5}},
        ["llmnb render-config: error: generation.temprature: unknown key; did you mean 'temperature'?"]),
    'gen_rep_zero': ({'generation': {'repetition_penalty': 0}},
        ['llmnb render-config: error: generation.repetition_penalty: must be a number > 0 (got 0)']),
    'prompt_attr': ({'prompt': {'template': 'Q: {q.upper}'}},
        ["llmnb render-config: error: prompt.template: field {q.upper} uses attribute or index access, which is not supported; use a plain column name (got 'Q: {q.upper}')"]),
    'prompt_index': ({'prompt': {'template': 'Q: {q[0]}'}},
        ["llmnb render-config: error: prompt.template: field {q[0]} uses attribute or index access, which is not supported; use a plain column name (got 'Q: {q[0]}')"]),
    'prompt_conv': ({'prompt': {'template': 'Q: {q!r}'}},
        ["llmnb render-config: error: prompt.template: field {q!r} uses a conversion, which is not supported (got 'Q: {q!r}')"]),
    'prompt_spec': ({'prompt': {'template': 'Q: {q:>10}'}},
        ["llmnb render-config: error: prompt.template: field {q:>10} has an unsupported format spec; allowed: none, or a float format containing 'f' such as ':.2f' (got 'Q: {q:>10}')"]),
    'prompt_width': ({'prompt': {'template': 'Q: {q:999999999999.2f}'}},
        ["llmnb render-config: error: prompt.template: field {q:999999999999.2f} asks for a width or precision over 1000; allowed: at most 1000 (got 'Q: {q:999999999999.2f}')"]),
    'prompt_brace': ({'prompt': {'template': 'Q: {q'}},
        ["llmnb render-config: error: prompt.template: unclosed '{' at position 3 (write '{{' for a literal brace) (got 'Q: {q')"]),
    'prompt_empty_field': ({'prompt': {'template': 'Q: {}'}},
        ["llmnb render-config: error: prompt.template: positional field {} is not allowed; use a column name, __sample__, __task__ or __context__ (got 'Q: {}')"]),
    'prompt_digit': ({'prompt': {'template': 'Q: {0}'}},
        ["llmnb render-config: error: prompt.template: positional field {0} is not allowed; use a column name, __sample__, __task__ or __context__ (got 'Q: {0}')"]),
    'prompt_unknown_key': ({'prompt': {'templat': 'x'}},
        ["llmnb render-config: error: prompt.templat: unknown key; did you mean 'template'?"]),
    'prompt_retrieval_type': ({'prompt': {'retrieval': {'type': 'semantc'}}},
        ["llmnb render-config: error: prompt.retrieval.type: invalid value (got 'semantc'); allowed: 'random' or 'semantic'"]),
    'prompt_retrieval_k': ({'prompt': {'retrieval': {'type': 'random', 'k': -1}}},
        ['llmnb render-config: error: prompt.retrieval.k: must be >= 0 (got -1)']),
    'no_input': ({'input_features': []},
        ['llmnb render-config: error: input_features: an LLM needs exactly one input feature (got 0); allowed: one feature of type text']),
    'no_output': ({'output_features': []},
        ['llmnb render-config: error: output_features: an LLM needs exactly one output feature (got 0); allowed: one feature of type text or category']),
    'two_inputs': ({'input_features': [{'name': 'q', 'type': 'text'}, {'name': 'r', 'type': 'text'}]},
        ['llmnb render-config: error: input_features: an LLM needs exactly one input feature (got 2); allowed: one feature of type text']),
    'two_outputs': ({'output_features': [{'name': 'a', 'type': 'text'}, {'name': 'b', 'type': 'text'}]},
        ['llmnb render-config: error: output_features: an LLM needs exactly one output feature (got 2); allowed: one feature of type text or category']),
    'input_type': ({'input_features': [{'name': 'q', 'type': 'image'}]},
        ["llmnb render-config: error: input_features[0].type: invalid value (got 'image'); allowed: 'text'"]),
    'output_type': ({'output_features': [{'name': 'a', 'type': 'binary'}]},
        ["llmnb render-config: error: output_features[0].type: unknown type (got 'binary'); allowed: 'text', 'category'"]),
    'input_no_name': ({'input_features': [{'type': 'text'}]},
        ['llmnb render-config: error: input_features[0].name: required key is missing']),
    'output_no_name': ({'output_features': [{'type': 'text'}]},
        ['llmnb render-config: error: output_features[0].name: required key is missing']),
    'input_not_list': ({'input_features': {'name': 'q', 'type': 'text'}},
        ['llmnb render-config: error: input_features: must be a list (got {"name": "q", "type": "text"})']),
    'model_type': ({'model_type': 'ecd'},
        ["llmnb render-config: error: model_type: llmnb runs only LLM configs (got 'ecd'); allowed: 'llm'"]),
    'base_model_empty': ({'base_model': ''},
        ["llmnb render-config: error: base_model: must not be empty; allowed: a preset (e.g. 'smollm2-135m-instruct'), a Hub id 'org/name', or an existing local folder or .gguf file"]),
    'base_model_int': ({'base_model': 7},
        ['llmnb render-config: error: base_model: must be a string (got 7)']),
    'base_model_missing': ({'base_model': None},
        ['llmnb render-config: error: base_model: required key is missing']),
    'unknown_top': ({'trainr': {'epochs': 1}},
        ["llmnb render-config: error: trainr: unknown key; did you mean 'trainer'?"]),
    'preproc_split_probs': ({'preprocessing': {'split': {'type': 'random', 'probabilities': [0.5, 0.6, 0.1]}}},
        ['llmnb render-config: error: preprocessing.split.probabilities: must be 3 numbers in [0, 1] (train, validation, test) that sum to 1 (got [0.5, 0.6, 0.1])']),
    'preproc_split_type': ({'preprocessing': {'split': {'type': 'randm'}}},
        ["llmnb render-config: error: preprocessing.split.type: unknown type (got 'randm'); allowed: 'random', 'fixed', 'stratify', 'hash', 'datetime'"]),
    'preproc_global_neg': ({'preprocessing': {'global_max_sequence_length': -5}},
        ['llmnb render-config: error: preprocessing.global_max_sequence_length: must be an integer >= 1 (got -5)']),
    'preproc_sample_ratio': ({'preprocessing': {'sample_ratio': 2.0}},
        ['llmnb render-config: error: preprocessing.sample_ratio: must be a number <= 1 (got 2.0)']),
    'input_maxlen_neg': ({'input_features': [{'name': 'q', 'type': 'text', 'preprocessing': {'max_sequence_length': -1}}]},
        ['llmnb render-config: error: input_features[0].preprocessing.max_sequence_length: must be an integer >= 1 (got -1)']),
    'output_maxlen_zero': ({'output_features': [{'name': 'a', 'type': 'text', 'preprocessing': {'max_sequence_length': 0}}]},
        ['llmnb render-config: error: output_features[0].preprocessing.max_sequence_length: must be an integer >= 1 (got 0)']),
    'backend_type': ({'backend': {'type': 'spark'}},
        ["llmnb render-config: error: backend.type: invalid value (got 'spark'); allowed: 'local' or 'ray'"]),
    'category_vocab_str': ({'output_features': [{'name': 'a', 'type': 'category', 'preprocessing': {'vocab': 'abc'}}]},
        ["llmnb render-config: error: output_features[0].preprocessing.vocab: must be a list (got 'abc')"]),
    'trust_str': ({'trust_remote_code': 'maybe'},
        ["llmnb render-config: error: trust_remote_code: must be true or false (got 'maybe')"]),
    'seed_str': ({'trainer': {'type': 'finetune', 'seed': 'abc'}},
        ["llmnb render-config: error: trainer.seed: must be an integer (got 'abc')"]),
    'adalora_target': ({'adapter': {'type': 'adalora', 'target_r': -1}},
        ['llmnb render-config: error: adapter.target_r: must be an integer >= 1 (got -1)']),
    'prompt_tuning_tokens': ({'adapter': {'type': 'prompt_tuning', 'num_virtual_tokens': 0}},
        ['llmnb render-config: error: adapter.num_virtual_tokens: must be an integer >= 1 (got 0)']),
    'ia3_unknown': ({'adapter': {'type': 'ia3', 'r': 8}},
        ['llmnb render-config: error: adapter.r: unknown key; allowed: type, target_modules, feedforward_modules, fan_in_fan_out, modules_to_save, init_ia3_weights, pretrained_adapter_weights, postprocessor']),
    'merge_4bit': ({'quantization': {'bits': 4}, 'adapter': {'type': 'lora', 'postprocessor': {'merge_adapter_into_base_model': True}}},
        ["llmnb render-config: error: adapter: an adapter needs trainer.type: finetune (got trainer.type 'none'); allowed: trainer finetune, or adapter.pretrained_adapter_weights to predict with a trained adapter", 'adapter.postprocessor.merge_adapter_into_base_model: merging an adapter into a 4-bit quantized model is unsupported (got quantization.bits 4); allowed: quantization.bits: 8, or no quantization']),
}

@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_bad_config(name, tmp_path, capsys):
    override, want = CONFIG_CASES[name]
    p = tmp_path/"c.yaml"; p.write_text(yaml.safe_dump(merge(BASE, override)))
    assert run_cli(capsys, "render-config", p) == (2, want)

YAML_CASES = {
    "duplicate_key": ("base_model: smollm2-135m-instruct\ntrainer:\n  epochs: 1\n  epochs: 5\n",
                      "duplicate key 'epochs' (first at line 3, again at line 4); give each key once"),
    "duplicate_top_key": ("base_model: a/b\nbase_model: c/d\n", "duplicate key 'base_model' (first at line 1, again at line 2)"),
    "duplicate_in_list_item": ("input_features:\n  - name: q\n    name: r\n", "duplicate key 'name' (first at line 2, again at line 3)"),
    "bad_indent": ("trainer:\n  epochs: 1\n learning_rate: 2\n", "invalid YAML in {p} at line 3, column 2"),
    "tab": ("trainer:\n\tepochs: 1\n", "invalid YAML in {p} at line 2, column 1"),
    "not_a_mapping": ("- a\n- b\n", 'config: must be a mapping of keys (got ["a", "b"]) in {p}'),
    "scalar": ("hello\n", "config: must be a mapping of keys (got 'hello') in {p}"),
    "unclosed_flow": ("input_features: [{name: q, type: text}\n", "invalid YAML in {p}"),
}

@pytest.mark.parametrize("name", list(YAML_CASES))
def test_bad_yaml(name, tmp_path, capsys):
    text, want = YAML_CASES[name]
    p = tmp_path/"c.yaml"; p.write_text(text)
    rc, err = run_cli(capsys, "render-config", p)
    assert rc == 2 and len(err) == 1 and err[0].startswith("llmnb render-config: error: config: ") and want.format(p=p) in err[0], err

def test_config_file_not_found(tmp_path, capsys):
    rc, err = run_cli(capsys, "train", "-c", tmp_path/"nope.yaml", "--dataset", "x.csv", "-od", tmp_path/"o")
    assert rc == 2 and err == [f"llmnb train: error: config: file not found (got '{tmp_path/'nope.yaml'}'); allowed: a path "
                               "to a YAML or JSON file, a YAML string, or a dict"]

def test_lowercase_is_honoured_when_the_template_names_the_input():
    from llmnb.config import load_config
    from llmnb.prompt import render_prompt
    cfg = load_config(merge(BASE, dict(input_features=[dict(name="q", type="text", preprocessing=dict(lowercase=True))],
                                       prompt=dict(template="Q: {q}"))))
    assert render_prompt(cfg, dict(q="HeLLo")) == "Q: hello"
