"Metrics: exact match, ROUGE, BLEU, accuracy / macro-F1 / confusion matrix, the plot, and `LLM.evaluate` end to end on a tiny model."
import math
import numpy as np
import pandas as pd
import pytest
from llmnb.evaluate import text_metrics, category_metrics, plot_confusion_matrix
from llmnb.api import LLM

def test_exact_match_normalises_space_and_case():
    m = text_metrics(["  Paris ", "the  Cat", "dog"], ["paris", "The cat", "cat"])
    assert m["exact_match"] == pytest.approx(2 / 3)

def test_rouge_by_hand():
    m = text_metrics(["a b"], ["a c"])                 # one unigram of two in common, no bigram
    assert m["rouge1"] == pytest.approx(0.5) and m["rouge2"] == 0.0 and m["rougeL"] == pytest.approx(0.5)
    m = text_metrics(["a b c d"], ["a b c d"])
    assert m["rouge1"] == m["rouge2"] == m["rougeL"] == pytest.approx(1.0)

def test_bleu_bounds_and_order():
    same = text_metrics(["the quick brown fox jumps"], ["the quick brown fox jumps"])["bleu"]
    near = text_metrics(["the quick brown fox leaps"], ["the quick brown fox jumps"])["bleu"]
    far = text_metrics(["a slow red dog sits"], ["the quick brown fox jumps"])["bleu"]
    assert same == pytest.approx(100) and 0 < near < same and far == 0

def test_empty_inputs():
    assert text_metrics([], []) == dict(exact_match=0.0, rouge1=0.0, rouge2=0.0, rougeL=0.0, bleu=0.0)

def test_category_metrics_by_hand():
    truth = ["a", "a", "b", "b", "c", "c"]
    pred = ["a", "b", "b", "b", "a", "c"]
    m = category_metrics(pred, truth, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    f1 = []
    for l in "abc":
        tp = sum(p == t == l for p, t in zip(pred, truth)); fp = sum(p == l != t for p, t in zip(pred, truth)); fn = sum(t == l != p for p, t in zip(pred, truth))
        f1.append(2 * tp / (2 * tp + fp + fn))
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]

def test_truth_outside_vocab_gets_its_own_row():
    m = category_metrics(["a", "a"], ["a", "zzz"], ["a", "b"])
    assert m["labels"] == ["a", "b", "zzz"] and m["confusion_matrix"][2] == [1, 0, 0]

def test_plot_confusion_matrix():
    import matplotlib; matplotlib.use("Agg")
    m = category_metrics(["a", "b", "b"], ["a", "b", "a"], ["a", "b"])
    ax = plot_confusion_matrix(m, title="t")
    assert ax.get_title() == "t" and [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert sorted(int(t.get_text()) for t in ax.texts) == [0, 1, 1, 1]

ROWS = pd.DataFrame(dict(q=[f"Say {w}." for w in ["yes", "no", "yes", "no", "maybe", "yes"]], a=["yes", "no", "yes", "no", "maybe", "yes"]))

def test_evaluate_text_output(tiny_model_dir):
    llm = LLM(dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")],
                   generation=dict(max_new_tokens=3)))
    m, df = llm.evaluate(ROWS)
    assert {"exact_match", "rouge1", "rouge2", "rougeL", "bleu", "rows"} <= set(m) and m["rows"] == 6
    assert m["exact_match"] == pytest.approx(np.mean([p.strip().lower() == t for p, t in zip(df.a_predictions, ROWS.a)]))

def test_evaluate_category_output_loss_is_cross_entropy(tiny_model_dir, tmp_path):
    llm = LLM(dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")],
                   output_features=[dict(name="a", type="category", preprocessing=dict(fallback_label="maybe", vocab=["yes", "no"]))],
                   generation=dict(max_new_tokens=3)))
    m, df = llm.evaluate(ROWS, output_directory=tmp_path)
    want = -np.mean([math.log(df[f"a_probabilities_{t}"].iloc[i]) for i, t in enumerate(ROWS.a)])
    assert m["loss"] == pytest.approx(want) and m["loss"] > 0          # not the reference's constant 0
    assert m["accuracy"] == pytest.approx((df.a_predictions == ROWS.a).mean())
    assert m["labels"] == ["yes", "no", "maybe"] and np.sum(m["confusion_matrix"]) == 6
    assert (tmp_path/"eval_stats.json").exists() and (tmp_path/"predictions.csv").exists()
