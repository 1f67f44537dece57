"""Registry, config layering, data modes, PluginTrainer stages and checkpoints, CLI."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from recbole.model.sequential_recommender.caser import Caser
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

from conftest import ROOT
from recbole_sada.config import build_config, model_layers, property_files
from recbole_sada.data.dataset import TARGET_SEQ_FIELD, training_sequences
from recbole_sada.errors import InputError
from recbole_sada.model.backbones.sasrec import SASRec
from recbole_sada.quick_start import prepare, run_recbole_sada
from recbole_sada.trainer import PluginTrainer
from recbole_sada.utils import get_model, get_trainer, plugin_models

CLI = [sys.executable, str(ROOT / "run_recbole_sada.py")]


# ---------------------------------------------------------------- registry
def test_registry_prefers_plugin_models():
    assert get_model("SASRec") is SASRec
    assert issubclass(get_model("SASRec"), RecBoleSASRec)
    assert get_model("Caser") is Caser  # falls back to RecBole
    with pytest.raises(InputError, match="unknown model 'NoSuchRec'"):
        get_model("NoSuchRec")


def test_grid_builds_every_supported_pair_and_names_why_not():
    from recbole_sada.model.grid import BACKBONES, METHODS, UNSUPPORTED

    models = plugin_models()
    for method in METHODS:
        for backbone in BACKBONES:
            name = f"{method}{backbone}"
            assert (name in models) != (name in UNSUPPORTED), name
            if name in models:
                cls = models[name]
                assert cls.backbone_name == backbone and issubclass(cls, BACKBONES[backbone])
                layers = model_layers(cls)
                assert layers[0] == backbone and layers[-2:] == [method, name]
    assert set(UNSUPPORTED) == {"BASRecBERT4Rec", "SADABERT4Rec", "LLMESRBERT4Rec", "IDEABERT4Rec",
                                "LLMEmbRATBERT4Rec"}
    with pytest.raises(InputError) as err:
        get_model("BASRecBERT4Rec")
    assert "causal" in str(err.value) and "bidirectional" in str(err.value) and "\n" not in str(err.value)


def test_get_trainer_uses_sada_trainer_for_sequential():
    from recbole.utils import ModelType

    assert get_trainer(ModelType.SEQUENTIAL, "SASRec") is PluginTrainer
    assert get_trainer(ModelType.SEQUENTIAL, "Caser") is PluginTrainer


# ---------------------------------------------------------------- config
def test_config_layering(tiny_root, tmp_path):
    user_yaml = tmp_path / "user.yaml"
    user_yaml.write_text("hidden_size: 24\nlearning_rate: 0.005\n")
    base = {"data_path": str(tiny_root)}
    cfg = build_config("SASRec", "tiny", [str(user_yaml)], base)
    assert cfg["hidden_size"] == 24  # user file > RecBole SASRec.yaml (64)
    assert cfg["learning_rate"] == 0.005
    assert cfg["loss_type"] == "BCE"  # overall.yaml > RecBole's SASRec.yaml (CE)
    assert cfg["hidden_dropout_prob"] == 0.5  # plugin SASRec.yaml > RecBole's (0.5 vs 0.5)
    assert cfg["n_layers"] == 2  # RecBole's SASRec.yaml
    cfg = build_config("SASRec", "tiny", [str(user_yaml)], base, cmd_args=["--hidden_size=32"])
    assert cfg["hidden_size"] == 32  # command line > files
    cfg = build_config("SASRec", "tiny", [str(user_yaml)], {**base, "hidden_size": 40})
    assert cfg["hidden_size"] == 40  # config_dict > files


def test_model_layers_and_property_files_order():
    from recbole_sada.model.backbones.gru4rec import GRU4Rec

    assert model_layers(SASRec) == ["SASRec"]
    files = [os.path.relpath(f, ROOT / "recbole_sada") if str(ROOT) in f else os.path.basename(f) for f in property_files(GRU4Rec, "beauty")]
    assert files[0] == os.path.join("properties", "overall.yaml")  # RecBole loads its GRU4Rec.yaml itself
    assert files[-1] == os.path.join("properties", "dataset", "beauty.yaml")
    assert files.index(os.path.join("properties", "overall.yaml")) < files.index(
        os.path.join("properties", "model", "GRU4Rec.yaml")
    )

    class MethodOverSASRec(SASRec):
        properties_name = "BASRec"

    assert model_layers(MethodOverSASRec) == ["SASRec", "BASRec", "MethodOverSASRec"]
    files = property_files(MethodOverSASRec, "tiny")
    # RecBole's SASRec.yaml (which RecBole would not load for this name) comes first, below overall.yaml
    assert files[0].endswith(os.path.join("recbole", "properties", "model", "SASRec.yaml"))
    assert [os.path.basename(f) for f in files[1:]] == ["overall.yaml", "SASRec.yaml", "BASRec.yaml"]


def test_dataset_yaml_beats_model_yaml(tmp_path):
    # beauty.yaml sets train_mode: sequence, overall.yaml prefix
    (tmp_path / "beauty").mkdir()
    (tmp_path / "beauty" / "beauty.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    cfg = build_config("SASRec", "beauty", None, {"data_path": str(tmp_path)})
    assert cfg["train_mode"] == "sequence"
    cfg = build_config("SASRec", "beauty", None, {"data_path": str(tmp_path)}, cmd_args=["--train_mode=prefix"])
    assert cfg["train_mode"] == "prefix"


def test_ml100k_found_in_package_or_user_copy(tmp_path):
    cfg = build_config("SASRec", "ml-100k", None, {"data_path": str(tmp_path)})
    assert "dataset_example" in cfg["data_path"]
    copy = tmp_path / "ml-100k"
    copy.mkdir()
    (copy / "ml-100k.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    cfg = build_config("SASRec", "ml-100k", None, {"data_path": str(tmp_path)})
    assert os.path.samefile(cfg["data_path"], copy)


def test_every_entry_point_config_sets_torch_threads(tmp_path):
    """Training, tuning, preprocessing and the LLMSeR pipeline all build their config through
    build_config, which applies torch_threads (reruns give the same numbers)."""
    from recbole_sada.llmser.pipeline import pipeline_config

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        build_config("SASRec", "ml-100k", None, {"data_path": str(tmp_path), "torch_threads": 1})
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        pipeline_config("ml-100k", "SASRec", config_dict={"data_path": str(tmp_path)})
        assert torch.get_num_threads() == 1  # the default of overall.yaml
    finally:
        torch.set_num_threads(before)


def test_build_config_applies_reuse_freed_memory(tmp_path, monkeypatch):
    import recbole_sada.config as C

    calls = []
    monkeypatch.setattr(C, "reuse_freed_memory", lambda: calls.append(1) or True)
    build = lambda **kw: build_config("SASRec", "ml-100k", None, {"data_path": str(tmp_path), **kw})
    build()
    assert calls == []  # default ~: on for CE only, and the default loss is BCE
    build(loss_type="CE")
    assert calls == [1]
    build(loss_type="CE", reuse_freed_memory=False)
    build(reuse_freed_memory=True)
    assert calls == [1, 1]


_FAULTS = """
import resource, sys, torch
if sys.argv[1] == "reuse":
    from recbole_sada.config import reuse_freed_memory
    assert reuse_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(16):  # a CE logits matrix on Beauty (~100 MB), made and freed step after step
    before = faults()
    y = torch.ones(2000, 12101)
    print(faults() - before)
    del y
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator only")
def test_reuse_freed_memory_serves_large_tensors_without_page_faults():
    """What makes CE steps faster: by default glibc unmaps every freed ~100 MB block and the next
    one faults in all its pages (~24k of 4 KB); with the setting the heap keeps them, and after a
    few steps (aligned requests leave early free blocks a little short) it serves them again."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        return [int(n) for n in out.stdout.split()]

    assert min(faults("default")) > 10000
    assert max(faults("reuse")[-3:]) < 1000


@pytest.mark.parametrize(
    "dataset,needle",
    [("beauty", "s3rec_to_atomic.py"), ("amazon-beauty", "amazon_to_atomic.py"), ("nosuchdata", "unknown dataset")],
)
def test_missing_dataset_is_one_line_error(tmp_path, dataset, needle, monkeypatch):
    import recbole_sada.config as C

    real = C.recbole_dataset_url
    monkeypatch.setattr(C, "recbole_dataset_url", lambda d: real(d) and "http://127.0.0.1:9/closed.zip")
    with pytest.raises(InputError) as err:
        build_config("SASRec", dataset, None, {"data_path": str(tmp_path)})
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def dataset_server(tmp_path):
    """A local HTTP server that serves a RecBole-format zip (``Tiny_Set.zip`` holding
    ``Tiny_Set/Tiny_Set.inter``, as RecBole's archives are laid out); yields its base URL."""
    import functools
    import http.server
    import threading
    import zipfile

    served = tmp_path / "served"
    served.mkdir()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"] + [f"{u}\t{i}\t{u * 100 + i}" for u in range(1, 6) for i in range(1, 8)]
    with zipfile.ZipFile(served / "Tiny_Set.zip", "w") as z:
        z.writestr("Tiny_Set/Tiny_Set.inter", "\n".join(lines) + "\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", "\n".join(lines) + "\n"
    finally:
        server.shutdown()


def test_recbole_dataset_is_downloaded_when_missing(tmp_path, dataset_server, monkeypatch):
    import recbole_sada.config as C

    base, content = dataset_server
    monkeypatch.setattr(C, "recbole_dataset_url", lambda d: f"{base}/Tiny_Set.zip" if d == "tinydl" else None)
    cfg = build_config("SASRec", "tinydl", None, {"data_path": str(tmp_path / "data")})
    inter = tmp_path / "data" / "tinydl" / "tinydl.inter"
    assert inter.read_text() == content and os.path.samefile(cfg["data_path"], inter.parent)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["tinydl"]  # no temporary folder left


def test_unreachable_download_is_one_line_naming_the_files(tmp_path, dataset_server, monkeypatch):
    import recbole_sada.config as C

    base, _ = dataset_server
    monkeypatch.setattr(C, "recbole_dataset_url", lambda d: "http://127.0.0.1:9/Tiny_Set.zip")
    with pytest.raises(InputError) as err:
        build_config("SASRec", "tinydl", None, {"data_path": str(tmp_path / "data")})
    message = str(err.value)
    assert "\n" not in message and "tinydl.inter" in message and str(tmp_path / "data" / "tinydl") in message
    assert "127.0.0.1:9" in message and "URLError" in message
    # switched off: no attempt, the same kind of line
    monkeypatch.setattr(C, "recbole_dataset_url", lambda d: f"{base}/Tiny_Set.zip")
    with pytest.raises(InputError, match="download_datasets is False"):
        build_config("SASRec", "tinydl", None, {"data_path": str(tmp_path / "data"), "download_datasets": False})
    assert not (tmp_path / "data" / "tinydl" / "tinydl.inter").exists()


def test_bad_keys_rejected(tiny_root):
    with pytest.raises(InputError, match="train_mode"):
        build_config("SASRec", "tiny", None, {"data_path": str(tiny_root), "train_mode": "windows"})
    with pytest.raises(InputError, match="stage1_epochs"):
        build_config("SASRec", "tiny", None, {"data_path": str(tiny_root), "stage1_epochs": 3, "epochs": 3})
    with pytest.raises(InputError, match="config file not found"):
        build_config("SASRec", "tiny", ["/no/such.yaml"], {"data_path": str(tiny_root)})


# ---------------------------------------------------------------- data modes
def _prepared(small_cfg, **kw):
    return prepare("SASRec", "tiny", config_dict={**small_cfg, **kw})


def test_sequence_mode_has_same_pairs_as_prefix_mode(small_cfg):
    _, _, train_p, valid_p, _ = _prepared(small_cfg, train_mode="prefix")
    _, _, train_s, valid_s, _ = _prepared(small_cfg, train_mode="sequence")
    dp, ds = train_p._dataset, train_s._dataset
    n_users = len(np.unique(dp.inter_feat["user_id"].numpy()))
    assert len(ds.inter_feat) == n_users  # one sample per user
    # every (prefix, next item) pair of prefix mode appears in the sequence samples
    pairs_p = {
        (int(u), tuple(s[: int(n)].tolist()), int(t))
        for u, s, n, t in zip(dp.inter_feat["user_id"], dp.inter_feat["item_id_list"],
                              dp.inter_feat["item_length"], dp.inter_feat["item_id"])
    }
    pairs_s = set()
    for u, s, n, tg in zip(ds.inter_feat["user_id"], ds.inter_feat["item_id_list"],
                           ds.inter_feat["item_length"], ds.inter_feat[TARGET_SEQ_FIELD]):
        for k in range(1, int(n) + 1):
            pairs_s.add((int(u), tuple(s[:k].tolist()), int(tg[k - 1])))
    assert pairs_s == pairs_p  # sequences here are shorter than MAX_ITEM_LIST_LENGTH + 1
    # valid data identical in both modes
    assert torch.equal(valid_p._dataset.inter_feat["item_id"], valid_s._dataset.inter_feat["item_id"])


def test_training_sequences_exclude_valid_and_test(small_cfg):
    from conftest import write_tiny_dataset

    seqs = write_tiny_dataset(small_cfg["data_path"], name="tiny_check")
    for mode in ("prefix", "sequence"):
        _, data, train, _, _ = prepare("SASRec", "tiny_check", config_dict={**small_cfg, "train_mode": mode})
        uids, train_seqs = training_sequences(train._dataset)
        for uid, seq in zip(uids, train_seqs):
            token = data.id2token("user_id", int(uid))
            expected = seqs[int(token[1:])][:-2]
            got = [int(x[1:]) for x in data.id2token("item_id", seq)]
            assert got == expected


# ---------------------------------------------------------------- trainer
class StageRecorder(SASRec):
    """SASRec that records the stage of every training batch and returns named losses."""

    stages = []

    def calculate_loss(self, interaction):
        StageRecorder.stages.append(self.train_stage)
        loss = super().calculate_loss(interaction)
        if self.train_stage == 1:
            return {"loss_main": loss}
        return {"loss_main": loss, "loss_extra": loss * 0.0}


def _trainer(small_cfg, **kw):
    config, _, train, valid, test = _prepared(small_cfg, **kw)
    model = StageRecorder(config, train._dataset)
    return PluginTrainer(config, model), train, valid, test


def test_trainer_stage_switching_and_named_losses(small_cfg):
    StageRecorder.stages = []
    trainer, train, valid, _ = _trainer(small_cfg, epochs=3, stage1_epochs=2)
    n_batches = len(train)
    calls = []
    orig = trainer._valid_epoch
    trainer._valid_epoch = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
    trainer.fit(train, valid, saved=True)
    assert StageRecorder.stages == [1] * (2 * n_batches) + [2] * n_batches
    assert len(calls) == 1  # validation (and early stopping) only in stage 2
    assert trainer.loss_names == ["loss_main", "loss_extra"]
    assert os.path.isfile(trainer.stage1_model_file)
    out = trainer._generate_train_loss_output(2, 0.0, 1.0, (0.5, 0.25))
    assert "loss_main" in out and "loss_extra" in out and "stage 2" in out


def test_two_stage_switch_off_trains_augmented_from_start(small_cfg):
    StageRecorder.stages = []
    trainer, train, valid, _ = _trainer(small_cfg, epochs=2, stage1_epochs=1, two_stage=False)
    trainer.fit(train, valid, saved=False)
    assert set(StageRecorder.stages) == {2}


def test_checkpoint_reload_for_test(small_cfg):
    trainer, train, valid, test = _trainer(small_cfg, epochs=2)
    trainer.fit(train, valid, saved=True)
    best = torch.load(trainer.saved_model_file, weights_only=False)["state_dict"]
    expected = trainer.evaluate(test, load_best_model=True)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)  # spoil the weights: the reload must restore them
    again = trainer.evaluate(test, load_best_model=True)
    assert again == expected
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, best[k])


def test_pretrained_path_starts_in_stage_two(small_cfg):
    StageRecorder.stages = []
    trainer, train, valid, _ = _trainer(small_cfg, epochs=2, stage1_epochs=1)
    trainer.fit(train, valid, saved=True)
    stage1 = trainer.stage1_model_file
    StageRecorder.stages = []
    trainer2, train, valid, _ = _trainer(small_cfg, epochs=2, stage1_epochs=1, pretrained_path=stage1)
    state = torch.load(stage1, weights_only=False)["state_dict"]
    trainer2.fit(train, valid, saved=False)
    assert set(StageRecorder.stages) == {2}
    assert len(StageRecorder.stages) == 2 * len(train)  # all epochs are stage 2


@pytest.mark.parametrize("model", ["SASRec", "BASRecSASRec", "IDEASASRec"])
def test_resume_state_continues_a_killed_run_with_the_same_numbers(small_cfg, tmp_path, model):
    """A run killed after epoch 2 and started again with its ``resume_state`` ends where the
    uninterrupted run ends: same valid curve, best epoch and test metrics (random augmentation,
    negatives and shuffling included); the state file is gone afterwards."""
    cfg = {**small_cfg, "epochs": 5, "stage1_epochs": 2, "stopping_step": 10, "eval_step": 1}
    whole_curve = []
    whole = run_recbole_sada(model, "tiny", config_dict={**cfg, "resume_state": str(tmp_path / "a.pth")},
                             callback_fn=lambda e, v: whole_curve.append((e, v)))
    assert not (tmp_path / "a.pth").exists()

    state = tmp_path / "b.pth"
    curve = []

    def kill_after_epoch_2(epoch, score):
        curve.append((epoch, score))
        if epoch == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        run_recbole_sada(model, "tiny", config_dict={**cfg, "resume_state": str(state)}, callback_fn=kill_after_epoch_2)
    assert state.is_file()  # written before epoch 2 began
    resumed = run_recbole_sada(model, "tiny", config_dict={**cfg, "resume_state": str(state)},
                               callback_fn=lambda e, v: curve.append((e, v)))
    assert resumed["resumed_from"] == 2 and whole["resumed_from"] is None
    assert [c[0] for c in curve].count(2) == 2  # epoch 2 was validated before the kill and again after it
    last = [c for k, c in enumerate(curve) if all(d[0] != c[0] for d in curve[k + 1:])]
    assert last == whole_curve
    assert resumed["test_result"] == whole["test_result"]
    assert resumed["best_valid_result"] == whole["best_valid_result"]
    assert resumed["epochs_run"] == whole["epochs_run"] == 5
    assert not state.exists()


def test_resume_state_that_is_not_a_state_is_an_input_error(small_cfg, tmp_path):
    bad = tmp_path / "x.pth"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(InputError, match="resume_state .* is not a training state"):
        run_recbole_sada("SASRec", "tiny", config_dict={**small_cfg, "resume_state": str(bad)})
    bad.write_text("not a torch file")
    with pytest.raises(InputError, match="resume_state .* cannot be read"):
        run_recbole_sada("SASRec", "tiny", config_dict={**small_cfg, "resume_state": str(bad)})
    # a state of other settings (another hidden size): one line, not a state_dict traceback
    state = tmp_path / "s.pth"

    def kill(epoch, score):
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        run_recbole_sada("SASRec", "tiny", config_dict={**small_cfg, "epochs": 3, "resume_state": str(state)},
                         callback_fn=lambda e, v: kill(e, v) if e >= 1 else None)
    assert state.is_file()
    with pytest.raises(InputError, match="another model or other settings.*remove it"):
        run_recbole_sada("SASRec", "tiny", config_dict={**small_cfg, "epochs": 3, "resume_state": str(state),
                                                        "hidden_size": 8, "inner_size": 16})


# ---------------------------------------------------------------- quick start and determinism
def test_run_is_deterministic(small_cfg):
    r1 = run_recbole_sada("SASRec", "tiny", config_dict=small_cfg)
    r2 = run_recbole_sada("SASRec", "tiny", config_dict=small_cfg)
    assert r1["test_result"] == r2["test_result"]
    assert set(r1["test_result"]) == {"hit@10", "hit@20", "ndcg@10", "ndcg@20"}
    assert r1["epoch_time"] > 0


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec", "NextItNet"])
@pytest.mark.parametrize("mode", ["prefix", "sequence"])
def test_backbones_train_in_both_modes(small_cfg, model, mode):
    result = run_recbole_sada(model, "tiny", config_dict={**small_cfg, "train_mode": mode})
    assert 0.0 <= result["test_result"]["hit@10"] <= 1.0


# ---------------------------------------------------------------- CLI
def _cli(args, cwd):
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_success_prints_table(small_cfg, tmp_path):
    args = ["--model=SASRec", "--dataset=tiny"] + [f"--{k}={v}" for k, v in small_cfg.items() if k != "state"]
    res = _cli(args, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ndcg@10" in res.stdout and "valid" in res.stdout and "test" in res.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model=NoSuchRec", "--dataset=ml-100k"], "unknown model"),
        (["--model=SASRec", "--dataset=nosuchdata"], "unknown dataset"),
        (["--model=SASRec", "--dataset=beauty", "--data_path=/nonexistent"], "s3rec_to_atomic.py"),
        (["--model=SASRec", "--dataset=ml-100k", "stray"], "unrecognised arguments"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    res = _cli(args, tmp_path)
    assert res.returncode == 2
    lines = [l for l in res.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], res.stderr[-2000:]


def test_general_models_reload_checkpoints_too(tmp_path):
    """RecBole's own trainer (general models) also reloads its best checkpoint on torch >= 2.6."""
    cfg = {"data_path": str(tmp_path), "epochs": 1, "show_progress": False, "state": "WARNING",
           "checkpoint_dir": str(tmp_path / "saved"), "embedding_size": 8,
           "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}
    from conftest import write_tiny_dataset

    write_tiny_dataset(tmp_path, name="tinygen")
    result = run_recbole_sada("BPR", "tinygen", config_dict=cfg)
    assert "ndcg@10" in result["test_result"]


def test_concurrent_trainers_get_distinct_checkpoint_files(small_cfg):
    """Two runs of one model started in the same second must not share a checkpoint file."""
    config, _, train, _, _ = _prepared(small_cfg)
    a = PluginTrainer(config, SASRec(config, train._dataset))
    b = PluginTrainer(config, SASRec(config, train._dataset))
    assert a.saved_model_file != b.saved_model_file


def test_recbole_import_side_effect_anomaly_detection_is_undone(small_cfg):
    """RecBole 1.2.1's SINE module turns autograd anomaly detection on at import (slow backward)."""
    import recbole.model.sequential_recommender.sine  # noqa: F401

    torch.autograd.set_detect_anomaly(True)  # as that import left it
    _prepared(small_cfg)
    assert not torch.is_anomaly_enabled()
    _prepared(small_cfg, detect_anomaly=True)  # a deliberate debugging run keeps it
    assert torch.is_anomaly_enabled()
    torch.autograd.set_detect_anomaly(False)


def test_general_names_and_their_earlier_aliases():
    """Infrastructure is named for what it is; the earlier SADA* names still import."""
    from recbole_sada.data.dataset import PluginSequentialDataset, SADASequentialDataset
    from recbole_sada.errors import InputError, SADAInputError
    from recbole_sada.trainer import PluginTrainer
    from recbole_sada.trainer import SADATrainer as OldTrainer

    assert SADAInputError is InputError and OldTrainer is PluginTrainer
    assert SADASequentialDataset is PluginSequentialDataset
