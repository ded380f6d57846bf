"Preference tuning (llmnb.align): config checks, loss parity with TRL 1.16's trainers, and the four Ludwig alignment examples via the CLI."
import copy, json, math, subprocess, sys, tempfile, warnings
from pathlib import Path
import pandas as pd
import pytest, torch, yaml
from llmnb.config import ConfigError, load_config
from llmnb.errors import LlmnbError
from llmnb.align import (answer_logps, dpo_loss, kto_loss, kto_kl, orpo_loss, group_advantages, grpo_token_loss,
                         check_alignment_data, _mismatched, pair_logps, pack_pairs)
from llmnb.testing import tiny_llama

BASE = dict(base_model='smollm2-135m-instruct', input_features=[dict(name='prompt', type='text')],
            output_features=[dict(name='chosen', type='text')], adapter=dict(type='lora'))

def _cfg(**tr): return load_config({**BASE, 'trainer': tr})

# --- config: Ludwig 0.17's fields and defaults, every fine-tuning field, checks before any work ---------------------
def test_defaults_follow_ludwig():
    d, k, o, g = _cfg(type='dpo').trainer, _cfg(type='kto').trainer, _cfg(type='orpo').trainer, _cfg(type='grpo').trainer
    assert (d.dpo_beta, d.dpo_loss_type, d.dpo_label_smoothing, d.rejected_column) == (0.1, 'sigmoid', 0.0, 'rejected')
    assert (k.kto_beta, o.orpo_beta, g.grpo_beta, g.grpo_epsilon, g.grpo_num_generations) == (0.1, 0.1, 0.04, 0.2, 4)
    t = _cfg(type='dpo', learning_rate=1e-5, gradient_accumulation_steps=4, steps_per_checkpoint=3).trainer
    assert (t.learning_rate, t.gradient_accumulation_steps, t.steps_per_checkpoint) == (1e-5, 4, 3)

def test_beta_alias_noted():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert _cfg(type='orpo', beta=0.3).trainer.orpo_beta == 0.3
    assert any('trainer.beta' in str(x.message) and 'orpo_beta' in str(x.message) for x in w)

@pytest.mark.parametrize('over,msg', [
    (dict(trainer=dict(type='grpo', grpo_num_generations=1)), 'trainer.grpo_num_generations: must be at least 2'),
    (dict(trainer=dict(type='dpo', dpo_label_smoothing=0.7)), 'trainer.dpo_label_smoothing'),
    (dict(trainer=dict(type='dpo', dpo_loss_type='hinge')), 'trainer.dpo_loss_type'),
    (dict(trainer=dict(type='grpo', rewards=[dict(type='regex')])), 'trainer.rewards[0].pattern: required'),
    (dict(trainer=dict(type='grpo', rewards=[dict(type='regex', pattern='(')])), 'invalid regular expression'),
    (dict(trainer=dict(type='kto'), output_features=[dict(name='chosen', type='category')]), 'output_features[0].type'),
    (dict(trainer=dict(type='dpo'), adapter=None, quantization=dict(bits=4)), 'quantization: fine-tuning a quantized model needs adapter'),
])
def test_bad_alignment_config(over, msg):
    with pytest.raises(ConfigError) as e: load_config({**BASE, **over})
    assert msg in str(e.value), str(e.value)

@pytest.mark.parametrize('tr,cols,msg', [
    (dict(type='dpo'), ['prompt', 'chosen'], "trainer.rejected_column: column 'rejected' is not in the training data"),
    (dict(type='orpo', rejected_column='worse'), ['prompt', 'chosen', 'rejected'], "column 'worse'"),
    (dict(type='kto'), ['prompt', 'chosen'], "a boolean 'label' column"),
    (dict(type='grpo'), ['prompt', 'chosen'], 'or give trainer.rewards for online GRPO'),
    (dict(type='grpo', rewards=[dict(type='exact', column='gold')]), ['prompt', 'chosen'], "trainer.rewards[0].column: column 'gold'"),
])
def test_bad_alignment_data(tr, cols, msg):
    with pytest.raises(LlmnbError) as e: check_alignment_data(_cfg(**tr), cols)
    assert msg in str(e.value), str(e.value)

def test_reward_functions_only_for_grpo():
    with pytest.raises(LlmnbError, match='reward_functions: only trainer.type grpo'):
        check_alignment_data(_cfg(type='dpo'), ['prompt', 'chosen', 'rejected'], [lambda p, c, **k: [0.0] * len(c)])
    check_alignment_data(_cfg(type='grpo'), ['prompt', 'chosen'], [lambda p, c, **k: [0.0] * len(c)])  # online: no rejected needed

# --- parity with TRL 1.16 on the same batch ---------------------------------------------------------------------
@pytest.fixture(scope='module')
def tok(embedded_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(embedded_dir)

def _tiny(tok, seed):
    return tiny_llama(vocab_size=len(tok), seed=seed, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

PAIRS = dict(prompt=["Date: March 3 2001.", "Write 5 in words:", "Capital of France?"],
             chosen=[" 2001-03-03", " five", " Paris"], rejected=[" 2001-03-04 or so", " six", " Lyon, I think"])

def _rows(ids, attention, completion):
    "Engine rows from a right-padded TRL batch: each row's real tokens and where its completion starts."
    out = []
    for i in range(ids.shape[0]):
        k = int(attention[i].sum())
        out.append(dict(input_ids=ids[i, :k].tolist(), n_prompt=int((completion[i, :k] == 0).sum())))
    return out

@pytest.mark.parametrize('loss_type', ['sigmoid', 'ipo'])
def test_dpo_matches_trl(tok, loss_type, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    m, ref = _tiny(tok, 1), _tiny(tok, 2)
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, report_to=[], use_cpu=True, bf16=False,
                     beta=0.3, loss_type=[loss_type])
    t = DPOTrainer(model=m, ref_model=ref, args=args, train_dataset=Dataset.from_dict(PAIRS), processing_class=tok)
    batch = t.data_collator([t.train_dataset[i] for i in range(3)])
    trl_loss = t.compute_loss(t.model, batch)
    rows = _rows(batch['input_ids'], batch['attention_mask'], batch['completion_mask'])
    (s, n), (rs, _) = answer_logps(t.model, rows), answer_logps(ref, rows)
    ours = dpo_loss(s[:3], s[3:], rs[:3], rs[3:], 0.3, loss_type, 0.0, n[:3], n[3:]).mean()
    assert abs(float(trl_loss) - float(ours)) < 1e-5
    pairs = [dict(input_ids=c['input_ids'], n_prompt=c['n_prompt'], rejected_input_ids=r['input_ids'],
                  rejected_n_prompt=r['n_prompt']) for c, r in zip(rows[:3], rows[3:])]
    (s, n), (rs, _) = pair_logps(t.model, pairs), pair_logps(ref, pairs)   # the prompt shared: still TRL's loss
    shared = dpo_loss(s[0::2], s[1::2], rs[0::2], rs[1::2], 0.3, loss_type, 0.0, n[0::2], n[1::2]).mean()
    assert abs(float(trl_loss) - float(shared)) < 1e-5

def test_dpo_label_smoothing_is_conservative_dpo():
    "TRL 1.16's sigmoid has no smoothing; Ludwig's dpo_label_smoothing is cDPO (TRL <= 0.x's sigmoid with label_smoothing)."
    c, r, z = torch.tensor([-3.]), torch.tensor([-5.]), torch.zeros(1)
    v = 0.1 * 2.0
    expect = -math.log(1 / (1 + math.exp(-v))) * 0.8 - math.log(1 / (1 + math.exp(v))) * 0.2
    assert abs(float(dpo_loss(c, r, z, z, 0.1, 'sigmoid', 0.2)) - expect) < 1e-6

def test_kto_matches_trl(tok, tmp_path):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer
    m, ref = _tiny(tok, 1), _tiny(tok, 2)
    data = dict(prompt=PAIRS['prompt'] * 2, completion=PAIRS['chosen'] + PAIRS['rejected'], label=[True] * 3 + [False] * 3)
    args = KTOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, report_to=[], use_cpu=True, bf16=False,
                     beta=0.2, desirable_weight=1.0, undesirable_weight=1.5)
    t = KTOTrainer(model=m, ref_model=ref, args=args, train_dataset=Dataset.from_dict(data), processing_class=tok)
    batch = t.data_collator([t.train_dataset[i] for i in range(6)])
    trl_loss = t.compute_loss(t.model, batch)
    rows = _rows(batch['input_ids'], batch['attention_mask'], batch['completion_mask'])
    kl_rows = _rows(batch['KL_input_ids'], batch['KL_attention_mask'], batch['KL_completion_mask'])
    assert kl_rows == _mismatched(rows)   # our KL sequences are TRL's: each prompt with the previous row's answer
    (s, _), (rs, _) = answer_logps(t.model, rows + kl_rows), answer_logps(ref, rows + kl_rows)
    kl = kto_kl(s[6:], rs[6:])
    ours = kto_loss(s[:6], rs[:6], batch['label'].bool(), kl, 0.2, 1.0, 1.5).mean()
    assert abs(float(trl_loss) - float(ours)) < 1e-5

def test_orpo_matches_trl():
    "TRL's own `ORPOTrainer.odds_ratio_loss` (a method that reads only `beta` and the device) on the same log-probs."
    from types import SimpleNamespace
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer
    torch.manual_seed(0)
    c, r = -torch.rand(5) * 3, -torch.rand(5) * 3
    c[0] = -0.01   # near 0: the log1mexp branch
    stub = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device='cpu'))
    losses = ORPOTrainer.odds_ratio_loss(stub, c, r)[0]
    nll = torch.tensor(1.7)
    trl_loss = nll - losses.mean()   # orpo_trainer.py: loss = policy_nll_loss - losses.mean()
    assert abs(float(trl_loss) - float(orpo_loss(c, r, nll, 0.25).mean())) < 1e-6

def test_grpo_matches_trl_formula():
    "TRL 1.16 GRPOTrainer._compute_loss (loss_type 'grpo', one iteration) and advantages, written out on fixed values."
    torch.manual_seed(0)
    G, T = 4, 5
    rewards = torch.tensor([1., 0., 0., 1., 0.5, 0.5, 0.5, 1.])
    mean = rewards.view(-1, G).mean(1).repeat_interleave(G); std = rewards.view(-1, G).std(1).repeat_interleave(G)
    adv = (rewards - mean) / (std + 1e-4)
    assert torch.allclose(group_advantages(rewards, G), adv)
    logps, ref = -torch.rand(8, T) * 2, -torch.rand(8, T) * 2
    mask = torch.ones(8, T); mask[1, 3:] = 0; mask[6, 1:] = 0
    old = logps.detach()
    coef1 = torch.exp(logps - old); coef2 = coef1.clamp(1 - 0.2, 1 + 0.2)
    per_tok = -torch.min(coef1 * adv[:, None], coef2 * adv[:, None])
    per_tok = per_tok + 0.04 * (torch.exp(ref - logps) - (ref - logps) - 1)
    trl = ((per_tok * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    ours = grpo_token_loss(logps, old, ref, adv[:, None].expand(8, T), 0.04, 0.2)
    assert abs(float(((ours * mask).sum(-1) / mask.sum(-1)).mean()) - float(trl)) < 1e-6

# --- prompt sharing: the pair's prompt once, the same log-probs and gradients as the unshared forward ---------------
def _pairs(tok, n=6):
    "Pair rows of the dates task through the shared encoding (chat template, answer + EOS), as the engine builds them."
    from datasets import Dataset
    from llmnb.align import alignment_rows, dates_pairs
    from llmnb.prompt import render_prompts
    from llmnb.tokens import sequence_limits
    cfg = load_config(dict(base_model='smollm2-135m-instruct', input_features=[dict(name='date', type='text')],
                           output_features=[dict(name='iso', type='text')], trainer=dict(type='dpo'),
                           prompt=dict(template='Write this date in ISO format (YYYY-MM-DD): {date}')))
    ds = render_prompts(Dataset.from_pandas(dates_pairs(n)), cfg)
    return alignment_rows(ds, tok, cfg, sequence_limits(cfg, 2048), 'dpo', 'iso')[0]

def _unshared(model, rows):
    from llmnb.align import _halves
    return answer_logps(model, [h for r in rows for h in _halves(r)])

def _check_shared(model, rows, eps=1e-5):
    "Summed log-probs and gradients within `eps` (relative to the magnitude, at least 1) of the unshared packed forward."
    (s, n), (u, k) = pair_logps(model, rows), _unshared(model, rows)
    assert torch.equal(n, k) and ((s - u).abs() / u.abs().clamp(min=1)).max() < eps, (s - u).abs().max()
    ps = [p for p in model.parameters() if p.requires_grad]
    g1 = torch.autograd.grad(pair_logps(model, rows)[0].sum(), ps)
    g2 = torch.autograd.grad(_unshared(model, rows)[0].sum(), ps)
    for a, b in zip(g1, g2): assert (a - b).abs().max() <= eps * max(1.0, float(b.abs().max()))

@pytest.mark.parametrize('attn', ['sdpa', 'eager'])
def test_prompt_shared_equals_unshared(tok, attn):
    rows = _pairs(tok)
    b = pack_pairs(rows)
    assert b['input_ids'].shape[1] == sum(len(r['input_ids']) + len(r['rejected_input_ids']) - r['n_prompt'] for r in rows)
    m = _tiny(tok, 3)
    m.config._attn_implementation = attn
    _check_shared(m, rows)
    mixed = rows[:2] + [dict(rows[2], rejected_input_ids=rows[3]['rejected_input_ids'],
                             rejected_n_prompt=rows[3]['rejected_n_prompt'])]   # a pair with two different prompts
    _check_shared(m, mixed)

def test_prompt_shared_lora_reference(tok):
    "Through a LoRA policy (B made non-zero) and its adapter-disabled reference, the numbers the DPO loss reads."
    from peft import LoraConfig, get_peft_model
    from llmnb.align import reference
    m = get_peft_model(_tiny(tok, 4), LoraConfig(r=4, target_modules=['q_proj', 'v_proj']))
    with torch.no_grad():
        for n_, p in m.named_parameters():
            if 'lora_B' in n_: p.normal_(0, 0.1)
    rows = _pairs(tok)
    _check_shared(m, rows)
    with reference(m) as r: assert (pair_logps(r, rows)[0] - _unshared(r, rows)[0]).abs().max() < 1e-5
    assert (pair_logps(m, rows)[0] - _unshared(m, rows)[0]).abs().max() < 1e-5

def test_prompt_sharing_falls_back(tok):
    "A sliding window shorter than a pair: the unshared forward (the same numbers, no 4D mask)."
    from llmnb.align import _can_share
    m, rows = _tiny(tok, 5), _pairs(tok, 2)
    assert _can_share(m, rows)
    m.config.sliding_window = 4
    assert not _can_share(m, rows)
    assert torch.equal(pair_logps(m, rows)[0], _unshared(m, rows)[0])

@pytest.mark.slow
def test_prompt_shared_equals_unshared_embedded(tok, embedded_dir):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    _check_shared(m, _pairs(tok, 8))

# --- Ludwig's four alignment examples through the CLI: train, save, reload with plain PEFT, predict ---------------
HERE = Path(__file__).parent
PREF = pd.DataFrame(dict(prompt=[f"What is {i} plus one?" for i in range(24)], chosen=[str(i + 1) for i in range(24)],
                         response=[str(i + 1) for i in range(24)], rejected=[str(i + 2) for i in range(24)],
                         label=[i % 2 == 0 for i in range(24)]))

def _cli(*args, cwd):
    r = subprocess.run([sys.executable, "-c", "from llmnb.cli import main; main()", *map(str, args)], capture_output=True,
                       text=True, cwd=cwd, env={**__import__('os').environ, "PYTHONPATH": str(HERE.parent)}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r

def _ludwig_example(kind, base, tmp_path):
    cfg = yaml.safe_load((HERE/'ludwig_configs'/f'ex_alignment__config_{kind}.yaml').read_text())
    cfg['base_model'] = str(base)
    cfg['trainer'].update(train_steps=2, trackers=[])   # a few steps; every other key is Ludwig's example's
    cfg['generation'] = dict(max_new_tokens=3)
    (tmp_path/'c.yaml').write_text(yaml.safe_dump(cfg))
    PREF.to_csv(tmp_path/'d.csv', index=False)
    r = _cli('train', '-c', 'c.yaml', '--dataset', 'd.csv', '-od', 'run', cwd=tmp_path)
    mode = {'grpo': 'grpo-offline'}.get(kind, kind)
    assert f'trainer.type {kind}: {mode}' in r.stderr
    stats = json.loads((tmp_path/'run'/'llmnb_statistics.json').read_text())
    return tmp_path/'run', stats

def _reload_and_predict(run, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer
    m = AutoPeftModelForCausalLM.from_pretrained(run/'model')
    tok = AutoTokenizer.from_pretrained(run/'model')
    out = m.generate(**tok("What is 3 plus one?", return_tensors='pt'), max_new_tokens=2, do_sample=False)
    assert out.shape[1] > 0
    _cli('predict', '-m', run, '--dataset', 'd.csv', '-od', 'pred', cwd=tmp_path)
    assert len(pd.read_csv(tmp_path/'pred'/'predictions.csv')) == len(PREF)

@pytest.mark.parametrize('kind', ['dpo', 'kto', 'orpo', 'grpo'])
def test_ludwig_alignment_example_cli(kind, tiny_model_dir, tmp_path):
    run, stats = _ludwig_example(kind, tiny_model_dir, tmp_path)
    assert stats['steps_done'] == 2 and 'rewards/accuracies' in stats['validation']
    _reload_and_predict(run, tmp_path)

@pytest.mark.slow
@pytest.mark.parametrize('kind', ['dpo', 'kto', 'orpo', 'grpo'])
def test_ludwig_alignment_example_cli_embedded(kind, tmp_path):
    run, stats = _ludwig_example(kind, 'smollm2-135m-instruct', tmp_path)
    assert stats['steps_done'] == 2
    _reload_and_predict(run, tmp_path)

# --- the reference, and Python rewards through the API (tiny model) ----------------------------------------------
def _train(tiny_model_dir, tmp_path, trainer, adapter=dict(type='lora', r=4), out='chosen', **kw):
    from llmnb.api import LLM
    cfg = dict(base_model=str(tiny_model_dir), input_features=[dict(name='prompt', type='text')],
               output_features=[dict(name=out, type='text')], adapter=adapter, generation=dict(max_new_tokens=3),
               trainer=dict(train_steps=2, batch_size=4, learning_rate=1e-3, trackers=[], **trainer))
    return LLM(cfg).train(PREF, output_directory=str(tmp_path/'run'), progress=False, **kw)

@pytest.mark.parametrize('adapter,pre,ref', [(None, False, 'frozen copy'), (None, True, 'precomputed'),
                                             (dict(type='lora', r=4), True, 'precomputed')])
def test_reference_variants(tiny_model_dir, tmp_path, adapter, pre, ref):
    st = _train(tiny_model_dir, tmp_path, dict(type='dpo', precompute_ref_log_probs=pre), adapter=adapter)
    assert st['alignment'] == dict(mode='dpo', reference=ref) and st['steps_done'] == 2
    assert all(math.isfinite(v[-1]) for v in st['validation'].values() if v)

def test_precomputed_equals_on_the_fly(tiny_model_dir, tmp_path):
    "Precomputed reference log-probs give the same training as the adapter-disabled reference on the fly."
    a = _train(tiny_model_dir, tmp_path/'a', dict(type='dpo'))
    b = _train(tiny_model_dir, tmp_path/'b', dict(type='dpo', precompute_ref_log_probs=True))
    assert abs(a['train']['loss'][-1] - b['train']['loss'][-1]) < 1e-5

def test_grpo_python_reward(tiny_model_dir, tmp_path):
    calls = []
    def longer_is_better(prompts, completions, **cols):
        calls.append((len(completions), sorted(cols)))
        return [float(len(c)) for c in completions]
    st = _train(tiny_model_dir, tmp_path, dict(type='grpo', grpo_num_generations=2), out='response', reward_functions=[longer_is_better])
    assert st['alignment']['mode'] == 'grpo-online' and 'reward' in st['validation']
    assert calls and calls[0][0] == 8 and {'chosen', 'rejected', 'label'} <= set(calls[0][1])   # 4 prompts x 2, the data's columns

def test_builtin_rewards():
    from llmnb.config import Reward
    from llmnb.align import builtin_reward, score
    R = lambda **kw: builtin_reward(Reward(**kw))
    comps, cols = ['2001-02-03', 'It is 2001-02-03.', '{"a": 1}', '{"a": "x"}'], dict(iso=['2001-02-03'] * 4)
    assert R(type='exact', column='iso')([''] * 4, comps, **cols) == [1, 0, 0, 0]
    assert R(type='contains', column='iso')([''] * 4, comps, **cols) == [1, 1, 0, 0]
    assert R(type='regex', pattern=r'^\d{4}-\d\d-\d\d$')([''] * 4, comps) == [1, 0, 0, 0]
    assert R(type='json')([''] * 4, comps) == [0, 0, 1, 1]
    schema = {'type': 'object', 'properties': {'a': {'type': 'integer'}}, 'required': ['a']}
    assert R(type='json_schema', schema=schema)([''] * 4, comps) == [0, 0, 1, 0]
    assert R(type='length', max_length=10)([''] * 4, comps) == [0, -0.7, 0, 0]
    s = score([R(type='exact', column='iso'), R(type='length', max_length=10)], [2.0, 1.0], [''] * 4, comps, cols)
    assert torch.allclose(s, torch.tensor([2.0, -0.7, 0, 0]))
    with pytest.raises(LlmnbError, match='returned 1 values for 4 completions'):
        score([lambda p, c, **k: [1.0]], [1.0], [''] * 4, comps, {})

def test_no_validation_split(tiny_model_dir, tmp_path):
    "Training rows only (validation split empty): trains, with no validation metrics."
    from llmnb.api import LLM
    cfg = dict(base_model=str(tiny_model_dir), input_features=[dict(name='prompt', type='text')],
               output_features=[dict(name='chosen', type='text')], adapter=dict(type='lora', r=4),
               trainer=dict(type='dpo', train_steps=1, batch_size=4, trackers=[]))
    st = LLM(cfg).train(training_set=PREF, output_directory=str(tmp_path/'run'), progress=False)
    assert st['steps_done'] == 1
