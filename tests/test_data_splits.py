"""The split protocol on tiny fixtures: hold-out, seeded test split, few-shot, roots, Hub."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from spt_cli import net as net_mod
from spt_cli.data import load_task_data
from spt_cli.data import sources as sources_mod
from spt_cli.data.readers import read_file
from spt_cli.data.splits import sample_few_shot, stratified_split
from spt_cli.data.tasks import Example, get_task
from spt_cli.errors import ConfigError, DataError

FIX = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network
    monkeypatch.delenv("SPT_DATA_DIR", raising=False)


def uids(examples):
    return [ex.uid for ex in examples]


def test_full_data_holdout_is_stratified_and_sums_to_train():
    data = load_task_data("rte", root=FIX, dev_ratio=0.5)
    assert len(data.train) + len(data.dev) == 12
    assert Counter(ex.label for ex in data.dev) == {0: 3, 1: 3}
    assert not set(uids(data.train)) & set(uids(data.dev))
    assert list(data.tests) == ["test"] and len(data.tests["test"]) == 4
    assert data.source == "glue" and data.files[0].endswith("glue/RTE/train.tsv")


def test_holdout_deterministic_and_seed_dependent():
    a = load_task_data("stsb", root=FIX, seed=13, dev_ratio=0.4)
    b = load_task_data("stsb", root=FIX, seed=13, dev_ratio=0.4)
    assert uids(a.dev) == uids(b.dev) and len(a.dev) == 4
    devs = {
        tuple(uids(load_task_data("stsb", root=FIX, seed=s, dev_ratio=0.4).dev)) for s in range(6)
    }
    assert len(devs) > 1


def test_dev_max_caps_holdout():
    data = load_task_data("rte", root=FIX, dev_ratio=0.5, dev_max=2)
    assert len(data.dev) == 2 and len(data.train) == 10


def test_mnli_matched_and_mismatched_tests():
    data = load_task_data("mnli", root=FIX, dev_ratio=0.34)
    assert list(data.tests) == ["test_matched", "test_mismatched"]
    assert Counter(ex.label for ex in data.dev) == {0: 1, 1: 1, 2: 1}


def test_original_split_and_seeded_test_split():
    mr = load_task_data("mr", root=FIX, dev_ratio=0.2)
    assert len(mr.tests["test"]) == 4 and len(mr.train) + len(mr.dev) == 10
    subj = load_task_data("subj", root=FIX, test_size=6, dev_ratio=0.25)
    assert subj.source.endswith("(seeded test split)")
    assert Counter(ex.label for ex in subj.tests["test"]) == {0: 3, 1: 3}
    assert len(subj.train) + len(subj.dev) == 14
    all_uids = uids(subj.train) + uids(subj.dev) + uids(subj.tests["test"])
    assert len(set(all_uids)) == 20
    with pytest.raises(ConfigError, match="test_size"):
        load_task_data("subj", root=FIX, test_size=20)


def test_superglue_cb_wic_full():
    cb = load_task_data("cb", root=FIX, dev_ratio=0.34)
    assert (len(cb.train), len(cb.dev), len(cb.tests["test"])) == (6, 3, 3)
    wic = load_task_data("wic", root=FIX, dev_ratio=0.34)
    assert len(wic.train) + len(wic.dev) == 6 and wic.source == "superglue"


def test_lmbff_kshot_files_used_verbatim():
    data = load_task_data("rte", root=FIX, shots=2, seed=13)
    raw_train = read_file(FIX / "k-shot/RTE/2-13/train.tsv", get_task("rte"), "rte/train/")
    assert data.train == raw_train and len(data.dev) == 4
    assert data.tests["test"] == read_file(FIX / "glue/RTE/dev.tsv", get_task("rte"), "rte/dev/")
    assert data.source == "lm-bff k-shot 2-13"
    mr = load_task_data("mr", root=FIX, shots=2, seed=13)
    assert [ex.text_a for ex in mr.train] == ["kbad .", "kdull .", "kgood .", "kfun ."]
    assert len(mr.tests["test"]) == 2  # the k-shot folder's own test file


def test_sampled_few_shot_k_per_class_disjoint_deterministic():
    runs = {}
    for seed in (1, 2, 3, 4):
        data = load_task_data("rte", root=FIX, shots=3, seed=seed)
        assert Counter(ex.label for ex in data.train) == {0: 3, 1: 3}
        assert Counter(ex.label for ex in data.dev) == {0: 3, 1: 3}
        assert not set(uids(data.train)) & set(uids(data.dev))
        assert len(data.tests["test"]) == 4
        runs[seed] = uids(data.train)
    assert uids(load_task_data("rte", root=FIX, shots=3, seed=1).train) == runs[1]
    assert len({tuple(v) for v in runs.values()}) > 1


def test_few_shot_stsb_bins_and_mnli_three_classes():
    data = load_task_data("stsb", root=FIX, shots=2, seed=5)
    assert sorted(ex.label >= 2.5 for ex in data.train) == [False, False, True, True]
    mnli = load_task_data("mnli", root=FIX, shots=1, seed=7)
    assert sorted(ex.label for ex in mnli.train) == [0, 1, 2]


def test_fewglue_pool_when_no_full_train():
    data = load_task_data("boolq", root=FIX, shots=2, seed=13)
    assert Counter(ex.label for ex in data.train) == {0: 2, 1: 2}
    assert all(ex.text_a.startswith("Train passage") for ex in data.train)
    assert all(ex.text_a.startswith("Dev passage") for ex in data.dev)
    assert len(data.tests["test"]) == 4 and data.source.startswith("fewglue")


def test_shots_larger_than_class():
    with pytest.raises(DataError, match=r"shots=4 exceeds the 6 examples of class 'entailment'"):
        load_task_data("rte", root=FIX, shots=4, seed=1)


def test_overlapping_user_few_shot_files(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(FIX / "glue/RTE", root / "glue/RTE")
    kdir = root / "k-shot/RTE/2-13"
    kdir.mkdir(parents=True)
    head = "index\tsentence1\tsentence2\tlabel\n"
    (kdir / "train.tsv").write_text(head + "0\ta\tb\tentailment\n1\tc\td\tnot_entailment\n")
    (kdir / "dev.tsv").write_text(head + "1\tc\td\tnot_entailment\n2\te\tf\tentailment\n")
    with pytest.raises(DataError, match="both train and dev"):
        load_task_data("rte", root=root, shots=2, seed=13)
    (kdir / "dev.tsv").write_text(head + "3\tc\td\tnot_entailment\n3\te\tf\tentailment\n")
    with pytest.raises(DataError, match="duplicate id"):
        load_task_data("rte", root=root, shots=2, seed=13)


def test_missing_files_list_every_path(tmp_path):
    with pytest.raises(DataError) as info:
        load_task_data("qnli", root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "glue/QNLI/train.tsv") in msg and "SPT_DATA_DIR" in msg
    assert "Hub: offline (HF_HUB_OFFLINE=1)" in msg and "\n" not in msg
    with pytest.raises(DataError, match="not a folder"):
        load_task_data("rte", root=tmp_path / "absent")


def test_unknown_task_and_bad_arguments():
    with pytest.raises(ConfigError, match="unknown dataset 'foo'; choose one of: sst2, mr"):
        load_task_data("foo", root=FIX)
    with pytest.raises(ConfigError, match="shots"):
        load_task_data("rte", root=FIX, shots=-1)


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("SPT_DATA_DIR", str(FIX))
    assert load_task_data("rte", dev_ratio=0.5).files[0].startswith(str(FIX.resolve()))
    monkeypatch.delenv("SPT_DATA_DIR")
    work = tmp_path / "a" / "repo"
    work.mkdir(parents=True)
    shutil.copytree(FIX / "glue/RTE", tmp_path / "a/shared/data/glue/RTE")
    monkeypatch.chdir(work)  # ../shared/data relative to the cwd, as CI lays it out
    roots = sources_mod.candidate_roots()
    assert roots[:3] == [work / "data", tmp_path / "a/shared/data", tmp_path / "shared/data"]
    assert load_task_data("rte").files[0] == str(tmp_path / "a/shared/data/glue/RTE/train.tsv")
    repo = Path(sources_mod.__file__).resolve().parents[2]
    assert repo / "data" in roots and (repo / "../shared/data").resolve() in roots


def test_hub_fails_fast_when_offline(tmp_path):
    t0 = time.time()
    with pytest.raises(DataError, match="Hub: offline"):
        load_task_data("sst2", root=tmp_path)
    with pytest.raises(DataError, match=r"Hub: disabled \(data.hub=false\)"):
        load_task_data("sst2", root=tmp_path, allow_hub=False)
    assert time.time() - t0 < 5


def test_hub_rows_conversion_with_fake_loader(monkeypatch, tmp_path):
    """The Hub path, with datasets.load_dataset replaced (no network)."""
    import datasets

    monkeypatch.setattr(sources_mod, "hub_unavailable_reason", lambda timeout=3.0: None)
    calls = []

    def fake_load(path, config):
        calls.append((path, config))
        if path == "nyu-mll/glue":
            rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3, "idx": i}
                    for i in range(30)]  # fmt: skip
            return {
                "train": rows,
                "validation_matched": rows[:6],
                "validation_mismatched": rows[:3],
            }
        rows = [{"premise": "p", "choice1": "a.", "choice2": "b", "question": "effect",
                 "label": i % 2, "idx": i} for i in range(10)]  # fmt: skip
        return {"train": rows, "validation": rows[:4]}

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    mnli = load_task_data("mnli", root=tmp_path)
    assert calls[-1] == ("nyu-mll/glue", "mnli") and mnli.source == "hub nyu-mll/glue/mnli"
    assert len(mnli.train) + len(mnli.dev) == 30
    assert set(mnli.tests) == {"test_matched", "test_mismatched"}
    assert mnli.tests["test_matched"][1] == Example("p1", "h1", 1, "mnli/hub-validation_matched/1")
    copa = load_task_data("copa", root=tmp_path)
    assert copa.tests["test"][0].text_a == "p What was the effect?"
    assert copa.tests["test"][0].text_b == "a or b"


def test_stratified_split_and_sampler_units():
    exs = [Example(str(i), None, int(i < 3), str(i)) for i in range(10)]
    rest, out = stratified_split(exs, 4, 0, lambda e: e.label)  # 7 x 0.4 = 2.8, 3 x 0.4 = 1.2
    assert Counter(e.label for e in out) == {0: 3, 1: 1}  # largest remainder gets the spare
    assert len(rest) == 6 and not {e.uid for e in rest} & {e.uid for e in out}
    assert [e.uid for e in rest] == sorted((e.uid for e in rest), key=int)  # input order kept
    train, dev = sample_few_shot(exs, get_task("rte"), 1, 42)
    assert len(train) == 2 and len(dev) == 2 and not set(train) & set(dev)


def test_hub_probe_without_offline_flags(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def refuse(address, timeout):
        raise ConnectionRefusedError

    monkeypatch.setattr(net_mod.socket, "create_connection", refuse)
    assert (
        sources_mod.hub_unavailable_reason()
        == "huggingface.co:443 is unreachable (ConnectionRefusedError)"
    )

    def stall(address, timeout):
        time.sleep(1.5)
        raise TimeoutError

    monkeypatch.setattr(net_mod.socket, "create_connection", stall)
    t0 = time.time()
    assert "no answer" in sources_mod.hub_unavailable_reason(timeout=0.2)
    assert time.time() - t0 < 2
