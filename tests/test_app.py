"""The web page's handlers without a browser (priorpaint.app): load, mask, run, downloads.

A tiny untrained prior (tests/tiny.py) on a 20-step diffusion makes a ``ddpm`` run exactly
20 network calls, so every run here takes well under a second.
"""

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tiny import save_tiny_prior

gr = pytest.importorskip("gradio", reason="the page needs gradio: pip install -e '.[app]'")

from priorpaint.app import engine  # noqa: E402
from priorpaint.app.inputs import mask_from_layers  # noqa: E402
from priorpaint.app.prior import describe  # noqa: E402
from priorpaint.app.ui import Page  # noqa: E402
from priorpaint.checkpoint import save_prior  # noqa: E402
from priorpaint.sampling.item_noise import item_seed  # noqa: E402
from priorpaint.sampling.run import run as sample_py_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIGIT = ROOT / "examples" / "digits" / "digit_03.png"


def app_config(ckpt, runs, *overrides, sampler="ddpm"):
    from hydra import compose, initialize_config_dir

    chosen = [f"sampler={sampler}"] if sampler else []   # None: configs/app.yaml's default
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("app", overrides=[f"ckpt={ckpt}", f"runs={runs}", "device=cpu",
                                         f"examples={ROOT / 'examples' / 'digits'}",
                                         *chosen, "time_batches=[1]", *overrides])


@pytest.fixture
def page(tmp_path, one_thread):
    ckpt = save_tiny_prior(tmp_path / "grey8.ckpt", channels=1, size=(8, 8), steps=20)
    return Page(app_config(ckpt, tmp_path / "runs"))


def painted_editor(upload_value, rows=slice(4, 10), cols=slice(5, 12)):
    """The editor value after a brush stroke over ``rows`` x ``cols`` of a 16x16 image."""
    value = dict(upload_value["value"])
    height, width = value["background"].shape[:2]
    k = height // 16   # the editor shows the image enlarged by a whole factor
    layer = np.zeros((height, width, 4), np.uint8)
    layer[rows.start * k:rows.stop * k, cols.start * k:cols.stop * k] = (255, 0, 255, 255)
    value["layers"] = [layer]
    return value


def named(update) -> dict:
    """One update of page.run by output name (ui.RUN_OUTPUTS)."""
    from priorpaint.app.ui import RUN_OUTPUTS

    assert len(update) == len(RUN_OUTPUTS)
    return dict(zip(RUN_OUTPUTS, update, strict=True))


def finish(generator):
    """Run a page.run generator to its end; every update by name and the last one's
    (status, preview, gallery, files)."""
    updates = [named(u) for u in generator]
    last = updates[-1]
    gallery = last["gallery"]
    if isinstance(gallery, dict):   # gr.update(value=[(view, label), ...], columns=...)
        factor = last["last"]["factor"]
        gallery = [(view[::factor, ::factor], label) for view, label in gallery["value"]]
    return updates, (last["status"], last["preview"], gallery, last["files"])


def test_checkpoint_info_and_folder_choice(tmp_path, one_thread):
    folder = tmp_path / "outputs"
    save_tiny_prior(folder / "a_grey.ckpt", channels=1, size=(8, 8), steps=20)
    from tiny import tiny_unet

    from priorpaint.diffusion import GaussianDiffusion
    diffusion = GaussianDiffusion.from_config({"schedule": "cosine", "steps": 20})
    save_prior(folder / "run" / "b_trained.ckpt", tiny_unet(3), diffusion, (8, 12), 3,
               extra={"global_step": 1234})
    save_prior(folder / "c_converted.ckpt", tiny_unet(3), diffusion, 8, 3,
               extra={"source": {"kind": "guided-diffusion", "file": "x.pt"}})
    page = Page(app_config(folder, tmp_path / "runs"))
    assert [Path(c).name for c in page.checkpoints] == ["a_grey.ckpt", "c_converted.ckpt",
                                                        "b_trained.ckpt"]
    first = describe(page.loaded)
    assert first["image_size"] == [8, 8] and first["channels"] == 1
    assert first["training_steps"] is None and "save_prior" in first["origin"]
    assert first["seconds_per_call"][1] > 0

    text, chosen = page.choose_checkpoint(page.checkpoints[2])
    assert chosen == "run/b_trained.ckpt"
    info = describe(page.prior(chosen))
    assert info["image_size"] == [8, 12] and info["channels"] == 3
    assert info["training_steps"] == 1234 and info["origin"] == "trained with train.py"
    assert "8 × 12" in text and "1,234" in text
    page.choose_checkpoint(page.checkpoints[1])
    assert describe(page.prior(page.checkpoints[1]))["origin"] == \
        "converted from guided-diffusion (x.pt)"
    assert describe(page.loaded)["image_size"] == [8, 8]   # a new visitor's: the first

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="without .ckpt files"):
        Page(app_config(tmp_path / "empty", tmp_path / "runs2"))


def test_mask_from_painted_layer():
    layer = np.zeros((16, 16, 4), np.uint8)
    layer[2:5, 3:9, 3] = 255           # painted (any colour, alpha > 0) = hole
    layer[10, 10] = (255, 255, 255, 0)   # colour without alpha: not painted
    mask = mask_from_layers([layer], (16, 16))
    expected = np.ones((16, 16), np.float32)
    expected[2:5, 3:9] = 0
    assert mask.shape == (1, 16, 16) and np.array_equal(mask[0].numpy(), expected)
    # a canvas twice the image's size maps back nearest-neighbour
    big = np.zeros((32, 32, 4), np.uint8)
    big[4:10, 6:18, 3] = 255
    assert np.array_equal(mask_from_layers([big], (16, 16))[0].numpy(), expected)
    assert bool(mask_from_layers([], (4, 4)).all())


def test_run_keeps_known_pixels_and_writes_downloads(page, tmp_path):
    upload = page.take_upload(str(DIGIT))
    editor, source, masked, note = upload
    assert "16×16" in note and "8×8" in note and "resized" in note
    editor = painted_editor(editor)
    view = page.show_mask(editor, source, "painted", 0)
    factor = view.shape[0] // 16
    assert view[5 * factor, 6 * factor] == 128   # the hole is grey in the masked view

    updates, (status, _, gallery, files) = finish(page.run(
        editor, source, "painted", "ddpm", "auto", 10, 10, 0.0, 2, 7))
    assert status.startswith("done: 2 sample(s), 20 network calls each")
    assert any(str(u["status"]).startswith("sampling: 20/20") for u in updates)
    original = np.asarray(Image.open(DIGIT))
    known = np.ones((16, 16), bool)
    known[4:10, 5:12] = False
    assert len(gallery) == 2
    for shown, _ in gallery:
        assert shown.shape == (16, 16)
        assert np.array_equal(shown[known], original[known])      # known pixels exact
        assert not np.array_equal(shown[~known], original[~known])  # the hole was sampled

    assert all(isinstance(f, str) for f in files)   # what gr.File takes
    files = [Path(f) for f in files]
    assert all(f.is_file() for f in files)
    assert not any(page.runs in f.parents for f in files)   # copies: no run folder served
    names = [f.name for f in files]
    assert names[0].endswith(".zip") and "mask.png" in names and "run.yaml" in names
    assert {"digit_03_s0.png", "digit_03_s1.png"} <= set(names)
    mask_png = np.asarray(Image.open(files[names.index("mask.png")]))
    assert np.array_equal(mask_png == 255, known)
    record = yaml.safe_load(files[names.index("run.yaml")].read_text())
    assert record["status"] == "complete"
    assert record["resolved"]["network_calls_per_sample"] == 20
    assert record["config"]["sampler"] == "ddpm" and record["config"]["seed"] == 7
    assert record["config"]["n_samples"] == 2
    assert [o["noise_seed"] for o in record["outputs"]] == [item_seed(7, 0, 0), item_seed(7, 0, 1)]
    assert "port" not in record["config"] and "runs" not in record["config"]
    import zipfile
    with zipfile.ZipFile(files[0]) as z:
        zipped = {Path(n).name for n in z.namelist()}
    assert {"digit_03_s0.png", "digit_03_s1.png", "mask.png", "run.yaml", "digit_03.png",
            "digit_03_grid.png"} <= zipped


def test_image_dropped_on_the_editor(page):
    """Without an uploaded file the editor's canvas is the input (grey RGBA -> grey)."""
    grey = np.asarray(Image.open(DIGIT))
    canvas = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    editor = painted_editor({"value": {"background": canvas, "layers": [], "composite": canvas}})
    _, (status, _, gallery, _) = finish(page.run(editor, None, "painted", "ddpm", "auto", None,
                                                 None, None, 1, 0))
    assert status.startswith("done") and "canvas" in status
    known = np.ones((16, 16), bool)
    known[4:10, 5:12] = False
    assert np.array_equal(gallery[0][0][known], grey[known])
    colour = canvas.copy()
    colour[0, 0, :3] = (255, 0, 0)   # a colour canvas for the grey prior: converted (luma)
    shown = page.show_mask({"background": colour, "layers": []}, None, "expand", 0)
    assert shown.ndim == 2


def test_a_colour_image_dropped_on_the_editor_gets_the_visible_note(page, tmp_path):
    """An image dropped on the editor (not the upload box) is converted colour -> grey for a
    grey prior like an upload is, and says so in the note line (wired to the editor's upload
    event); unreadable data for the page is a visible error, not a traceback."""
    from priorpaint.app.ui import build, shows_errors

    colour = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
    canvas = np.dstack([colour, np.full((16, 16), 255, np.uint8)])
    note = page.take_canvas({"background": canvas, "layers": []}, None)
    assert note.startswith("⚠ the image dropped on the editor is colour but the prior is grey: "
                           "converted to grey") and "16×16 but the prior works at 8×8" in note
    grey = np.dstack([colour[..., :1]] * 3 + [canvas[..., 3:]])
    assert "colour" not in page.take_canvas({"background": grey, "layers": []}, None)
    assert page.take_canvas({"background": None, "layers": []}) == ""
    # the page's own upload shown in the editor (enlarged) is reported as an upload too: the
    # upload's note stays
    Image.fromarray(colour).save(tmp_path / "colour.png")
    editor, source, _, _ = page.take_upload(str(tmp_path / "colour.png"))
    assert page.take_canvas(editor["value"], source) == gr.skip()
    # what the run inpaints is what the note says: the luma of the canvas
    image = page.current_input({"background": canvas, "layers": []}, None)
    assert np.array_equal(image.pixels[..., 0], np.asarray(Image.fromarray(colour).convert("L")))

    demo = build(page)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    wired = [fn for fn in demo.fns.values()
             if (by_id["editor"]._id, "upload") in [(t[0], t[1]) for t in fn.targets]]
    assert len(wired) == 1 and wired[0].outputs == [by_id["note"]]

    # the page's 8-bit grey/RGB rule (docs/values.md), visible in the note line
    np.save(tmp_path / "bands.npy", np.zeros((8, 8, 4), np.uint8))
    steps = iter(shows_errors(page.take_upload, 4, 3)(str(tmp_path / "bands.npy")))
    assert next(steps)[3].startswith("❌ bands.npy has 4 channels; the page shows grey or colour")
    with pytest.raises(gr.Error, match="bands.npy has 4 channels"):
        next(steps)


def test_photo_priors_inpaint_larger_photos_in_windows_at_their_own_size(tmp_path, one_thread):
    """configs/app.yaml's fit_by_prior: a photos* prior gets fit=crop (a photo several times
    the prior's size is inpainted in windows at its own resolution, not from a thumbnail),
    other priors keep fit=resize; the result is at the photo's size, known pixels exact."""
    save_tiny_prior(tmp_path / "priors" / "grey8.ckpt", channels=1, size=(8, 8), steps=20)
    save_tiny_prior(tmp_path / "priors" / "photos8.ckpt", channels=3, size=(8, 8), steps=20)
    page = Page(app_config(tmp_path / "priors", tmp_path / "runs"))
    assert (page.fit_for("photos8.ckpt"), page.fit_for("grey8.ckpt")) == ("crop", "resize")
    assert "per sample per window" in page.budget("ddpm", "auto", None, None, 1, "photos8.ckpt")
    assert "per window" not in page.budget("ddpm", "auto", None, None, 1, "grey8.ckpt")
    photo = np.random.default_rng(0).integers(0, 256, (17, 24, 3), np.uint8)   # 2-3x
    Image.fromarray(photo).save(tmp_path / "photo.png")
    editor, source, _, note = page.take_upload(str(tmp_path / "photo.png"), "photos8.ckpt")
    assert "in windows of the prior's size at the image's own resolution" in note
    _, (status, _, gallery, files) = finish(page.run(
        painted_editor(editor, rows=slice(5, 8), cols=slice(9, 14)), source, "painted", "ddpm",
        "auto", None, None, None, 1, 0, "photos8.ckpt"))
    assert status.startswith("done")
    record = yaml.safe_load(next(Path(f) for f in files if f.endswith("run.yaml")).read_text())
    assert record["config"]["fit"] == "crop"
    result = np.asarray(Image.open(next(f for f in files if f.endswith("photo_s0.png"))))
    mask = np.asarray(Image.open(next(f for f in files if f.endswith("mask.png")))) == 255
    assert result.shape == photo.shape and not mask.all()
    assert np.array_equal(result[mask], photo[mask])   # known pixels exact
    assert not np.array_equal(result[~mask], photo[~mask])
    with pytest.raises(ValueError, match="fit=thumbnail is unknown"):   # grey8's, at launch
        Page(app_config(tmp_path / "priors", tmp_path / "runs", "fit=thumbnail"))


def test_sample_py_reproduces_a_page_run(page, tmp_path):
    """Same engine: sample.py with the page's run.yaml config writes the same PNGs."""
    editor, source, _, _ = page.take_upload(str(DIGIT))
    _, (_, _, _, files) = finish(page.run(painted_editor(editor), source, "thick", "repaint",
                                          "10", 2, 2, 0.0, 2, 3))
    files = [Path(f) for f in files]
    record = yaml.safe_load(next(f for f in files if f.name == "run.yaml").read_text())
    config = dict(record["config"], out=str(tmp_path / "cli"))
    from omegaconf import OmegaConf
    sample_py_run(OmegaConf.create(config))
    for k in range(2):
        page_png = next(f for f in files if f.name == f"digit_03_s{k}.png")
        cli_png = tmp_path / "cli" / f"digit_03_s{k}.png"
        assert np.array_equal(np.asarray(Image.open(page_png)), np.asarray(Image.open(cli_png)))


def test_example_click_loads_that_example(page):
    from types import SimpleNamespace

    assert [Path(e).name for e in page.examples][:2] == ["digit_00.png", "digit_01.png"]
    editor, source, masked, _ = page.take_example(None, SimpleNamespace(index=1))
    assert source.path.name == "digit_01.png"
    assert np.array_equal(source.pixels[..., 0], np.asarray(Image.open(page.examples[1])))
    background = editor["value"]["background"][..., 0]
    k = background.shape[0] // 16
    assert k > 1 and np.array_equal(background, source.pixels[..., 0].repeat(k, 0).repeat(k, 1))
    assert masked.shape[0] >= 16 and masked.shape[0] % 16 == 0   # shown enlarged


def test_bad_inputs_give_clear_messages(tmp_path, one_thread):
    save_tiny_prior(tmp_path / "priors" / "grey8.ckpt", channels=1, size=(8, 8), steps=20)
    save_tiny_prior(tmp_path / "priors" / "rgb8.ckpt", channels=3, size=(8, 8), steps=20)
    page = Page(app_config(tmp_path / "priors", tmp_path / "runs"))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(gr.Error, match="notes.txt is not an image"):
        page.take_upload(str(text))


    editor, source, _, _ = page.take_upload(str(DIGIT))
    with pytest.raises(gr.Error, match="nothing to inpaint"):
        list(page.run(editor["value"], source, "painted", "ddpm", "auto", 10, 10, 0.0, 1, 0))
    with pytest.raises(gr.Error, match="no image"):
        list(page.run({"background": None, "layers": []}, None, "box", "ddpm", "auto", 10, 10,
                      0.0, 1, 0))
    assert page.budget("ddpm", "500", 10, 10, 1).startswith("⚠ steps=500 does not fit")
    with pytest.raises(gr.Error, match="steps=500 does not fit"):
        list(page.run(painted_editor(editor), source, "painted", "ddpm", "500", 10, 10, 0.0,
                      1, 0))
    assert not list((tmp_path / "runs").glob("*"))   # no run folder for refused runs


def test_budget_counts_calls_and_estimates_time(page):
    text = page.budget("repaint", "auto", 10, 10, 3)
    # 20 steps, j=10, r=10: sample.py's count for this schedule
    from priorpaint.sampling.api import build_schedule
    from priorpaint.sampling.time_schedules import count_network_calls
    calls = count_network_calls(build_schedule("repaint", 20, 10, 10)[0])
    assert f"**{calls:,} network calls**" in text
    assert page.budget("repaint", "auto", None, "", 3) == text   # blank = the config's 10, 10
    seconds = engine.estimate_seconds(page.loaded, calls, 3, 8)
    per_call = page.loaded.call_seconds[1]
    assert seconds == pytest.approx(calls * 3 * per_call)  # one timing: scales with the batch
    page.loaded.call_seconds = {1: 0.01, 2: 0.015}         # fixed + per-item cost
    assert engine.estimate_seconds(page.loaded, 100, 5, 2) == pytest.approx(
        100 * (0.015 + 0.015 + 0.01))


def test_cancel_stops_sampling_and_leaves_nothing(page, tmp_path):
    editor, source, _, _ = page.take_upload(str(DIGIT))
    image = page.current_input(editor["value"], source)
    request = engine.RunRequest(image=image, mask=mask_from_layers(
        painted_editor(editor)["layers"], image.size), sampler="ddpm", n_samples=1)
    cancel, seen = threading.Event(), []

    def on_progress(done, total):
        seen.append(done)
        if done == 5:
            cancel.set()

    with pytest.raises(engine.RunCancelled, match="after 6 of 20"):
        engine.run_inpainting(page.loaded, request, page.options, tmp_path / "runs",
                              on_progress=on_progress, cancel=cancel)
    assert seen == [1, 2, 3, 4, 5]
    assert not any((tmp_path / "runs").iterdir())
    assert not page.loaded.model._forward_hooks   # the preview hook is removed


def test_cancel_button_stops_the_page_run(page):
    editor, source, _, _ = page.take_upload(str(DIGIT))
    run = page.run(painted_editor(editor), source, "painted", "repaint", "auto", 10, 10, 0.0,
                   1, 0)
    assert named(next(run))["status"] == "sampling: starting…"
    page.cancel()
    status = named(list(run)[-1])["status"]
    assert status.startswith("cancelled") and "of 110" in status


def test_preview_is_the_predicted_x0(page, tmp_path):
    """Previews come every `preview_every` calls; the last call's x̂_0 is the result's hole
    (at the prior's own size, so no resize mixes known pixels into the hole)."""
    small = tmp_path / "small.png"
    Image.open(DIGIT).resize((8, 8)).save(small)
    _, source, _, _ = page.take_upload(str(small))
    mask = torch.ones(1, 8, 8)
    mask[:, 2:6, 1:5] = 0
    previews = []
    result = engine.run_inpainting(
        page.loaded, engine.RunRequest(image=source, mask=mask, sampler="ddpm", seed=1),
        page.options, tmp_path / "runs", preview_every=8,
        on_preview=lambda tiles, done: previews.append((done, tiles)))
    assert [done for done, _ in previews] == [1, 9, 17, 20]
    assert all(len(tiles) == 1 and tiles[0].shape == (8, 8, 1) for _, tiles in previews)
    hole = mask[0].numpy() < 0.5
    last = previews[-1][1][0][..., 0].astype(int)
    sample = result.samples[0][..., 0].astype(int)
    assert np.abs(last[hole] - sample[hole]).max() <= 1
    assert np.abs(previews[0][1][0][..., 0].astype(int)[hole] - sample[hole]).max() > 1


@pytest.mark.parametrize("kind", ["thick", "thin", "ev2li", "nn2", "expand", "genhalf", "box"])
def test_generated_masks_match_sample_py(page, kind):
    from priorpaint.masks import load_masks_for

    _, source, _, _ = page.take_upload(str(DIGIT))
    view = page.show_mask(None, source, kind, 5)
    expected = load_masks_for([DIGIT], kind, sizes=[(16, 16)], seed=5)[0][0].numpy() > 0.5
    factor = view.shape[0] // 16
    assert (view[::factor, ::factor][~expected] == 128).all()   # the hole is grey
    assert np.array_equal(page.current_mask(None, source, kind, 5)[0].numpy() > 0.5, expected)


def test_offline_launch_settings(page, monkeypatch):
    """No analytics, no share link, system fonts, one sampling job at a time."""
    from priorpaint.app import ui

    assert os.environ.get("GRADIO_ANALYTICS_ENABLED") == "False"
    demo = ui.build(page)
    assert demo.analytics_enabled is False
    captured = {}

    def fake_launch(self, **kwargs):
        captured.update(kwargs)
        return None, "http://127.0.0.1:1/", None

    monkeypatch.setattr(type(demo), "launch", fake_launch)
    monkeypatch.setattr(ui, "build", lambda p: demo)
    ui.launch(page.cfg, block=False)
    assert captured["share"] is False and captured["server_name"] == "127.0.0.1"
    assert captured["quiet"] is True   # Gradio's banner would suggest share=True
    assert demo._queue.default_concurrency_limit == 1
    fonts = str(ui._theme().font)
    assert "GoogleFont" not in fonts


def test_cli_bad_checkpoint_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    for args, message in ((["ckpt=" + str(tmp_path / "none.ckpt")], "is neither a checkpoint"),
                          ([], "ckpt= is required")):
        done = subprocess.run([sys.executable, "app.py", *args, f"runs={tmp_path}"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("app.py: error: ") and message in done.stderr
        assert "Traceback" not in done.stderr


def test_sampler_boxes_hold_the_chosen_samplers_values(page):
    """A blank number box comes back from the browser as 0 (j = 0 is refused, eta = 0 is not
    DDNM's default), so the page fills each box the sampler reads with its value."""
    from omegaconf import OmegaConf

    from priorpaint.app.ui import sampler_fields

    assert sampler_fields("repaint", page.cfg) == (10, 10, 0.0)
    assert sampler_fields("ddnm", page.cfg) == (1, 1, 0.85)
    cfg = OmegaConf.merge(page.cfg, {"jump_length": 5, "eta": 0.3})   # python app.py key=value
    assert sampler_fields("repaint", cfg) == (5, 10, 0.3)
    j, r, _ = sampler_fields("ddpm", page.cfg)
    assert j is None and r is None                      # ddpm has no jumps: boxes disabled
    budget = page.budget("ddnm", "auto", *sampler_fields("ddnm", page.cfg)[:2], 1)
    assert budget.startswith("**20 network calls**")    # ddnm's 100 steps, capped at the 20


def test_size_note_says_what_fit_does():
    from priorpaint.app.inputs import size_note
    from priorpaint.sampling.images import load_input

    image = load_input(DIGIT, 1)   # 16x16
    assert "resized" in size_note(image, (8, 8), 1, "resize")
    assert "windows" in size_note(image, (8, 8), 1, "auto")
    assert "own size" in size_note(image, (8, 8), 1, "native")
    assert size_note(image, (16, 16), 1, "auto") is None


def test_page_opens_on_ddnm_with_100_calls(tmp_path, one_thread):
    """configs/app.yaml's sampler: the study's pick, every other sampler one click away."""
    from priorpaint.app.ui import DEFAULT_SAMPLER_WHY, build
    from priorpaint.sampling.api import SAMPLERS

    ckpt = save_tiny_prior(tmp_path / "grey8.ckpt", channels=1, size=(8, 8), steps=200)
    page = Page(app_config(ckpt, tmp_path / "runs", sampler=None))
    demo = build(page)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    sampler, budget = by_id["sampler"], by_id["budget"]
    assert isinstance(sampler, gr.Radio) and sampler.value == "ddnm"
    assert [value for _, value in sampler.choices] == list(SAMPLERS)
    assert sampler.info == DEFAULT_SAMPLER_WHY and "2410" in sampler.info
    assert budget.value.startswith("**100 network calls** per sample")
    assert by_id["steps"].value == "auto"


def test_user_error_is_one_line_without_server_paths(tmp_path, one_thread, capsys):
    """A user error reaches the visitor with their file's name only (never Gradio's temp
    upload path) and the server log as one line, no traceback."""
    ckpt = save_tiny_prior(tmp_path / "grey8.ckpt", channels=1, size=(8, 8), steps=20)
    page = Page(app_config(ckpt, tmp_path / "runs"))
    upload = tmp_path / "gradio" / "0f3a9c" / "notes.png"   # how Gradio stores an upload
    upload.parent.mkdir(parents=True)
    upload.write_text("not an image")
    capsys.readouterr()
    with pytest.raises(gr.Error) as caught:
        page.take_upload(str(upload))
    message = caught.value.message
    assert message.startswith("notes.png is not an image") and str(tmp_path) not in message
    assert caught.value.print_exception is False and caught.value.duration is None
    log = capsys.readouterr().err
    assert log == f"app.py: user error: {message}\n"


def test_auth_pairs_from_config():
    from priorpaint.app.ui import auth_pairs
    from priorpaint.cli import UserError

    assert auth_pairs(None) is None
    assert auth_pairs(["alice:s3:cret", "bob:pw"]) == [("alice", "s3:cret"), ("bob", "pw")]
    for bad in (["alice"], ["alice:"], [":pw"]):
        with pytest.raises(UserError, match="user:password pairs"):
            auth_pairs(bad)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path, one_thread):
    """The page launched in this process on a free port, from a folder of one prior."""
    from priorpaint.app import ui

    save_tiny_prior(tmp_path / "priors" / "grey8.ckpt", channels=1, size=(8, 8), steps=20)
    launched = []

    def serve(*overrides):
        cfg = app_config(tmp_path / "priors", tmp_path / "runs", f"port={_free_port()}",
                         *overrides)
        demo, url = ui.launch(cfg, block=False)
        launched.append(demo)
        return url.rstrip("/")

    yield serve
    for demo in launched:
        demo.close()


def test_nobody_in_file_routes_and_api(served, tmp_path):
    """As an outside client: no file outside Gradio's own uploads/cache, and no checkpoint
    outside the listed folder, whatever the route or path spelling."""
    import httpx
    from gradio_client import Client

    url = served()
    outside = save_tiny_prior(tmp_path / "outside.ckpt", channels=1, size=(8, 8), steps=20)
    run_file = tmp_path / "runs" / "20250101-000000-digit" / "digit_s0.png"
    run_file.parent.mkdir(parents=True)
    run_file.write_bytes(b"another visitor's result")
    listed = tmp_path / "priors" / "grey8.ckpt"
    secret = Path("/etc/passwd").read_bytes()[:20]
    targets = ["/etc/passwd", str(listed), str(outside), str(run_file),
               "../../../../../../etc/passwd", "..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
               os.path.relpath(listed), os.path.relpath(run_file)]
    with httpx.Client(base_url=url, timeout=20) as http:
        assert http.get("/").status_code == 200   # the page itself is served
        for route in ("/gradio_api/file=", "/file=", "/gradio_api/file/", "/file/"):
            for target in targets:
                answer = http.get(route + target)
                assert answer.status_code in (403, 404), (route, target, answer.status_code)
                assert secret not in answer.content and b"visitor" not in answer.content

    client = Client(url, verbose=False, download_files=False)
    info = client.predict("grey8.ckpt", api_name="/choose_checkpoint")  # (the State: not in
    assert "8 × 8" in info                                                # the API) a listed
    # name works; anything else is refused, by Gradio's choice check or by Page.prior
    for choice in ("/etc/passwd", str(outside), str(listed), "../outside.ckpt"):
        with pytest.raises(Exception, match="not in the list of choices|not one of"):
            client.predict(choice, api_name="/choose_checkpoint")


def test_auth_key_makes_the_page_ask_for_a_login(served):
    import httpx

    url = served("auth=[alice:s3cret]")
    with httpx.Client(base_url=url, timeout=20) as http:
        assert http.get("/config").status_code == 401
        assert http.post("/login", data={"username": "alice", "password": "wrong"}
                         ).status_code >= 400
        assert http.post("/login", data={"username": "alice", "password": "s3cret"}
                         ).status_code == 200
        assert http.get("/config").status_code == 200   # the login cookie lets it in


def test_time_left_comes_from_this_runs_measured_pace():
    from priorpaint.app.ui import progress_html, progress_line, seconds_left

    # 10 calls in 2 s after the first report: 0.2 s a call, 80 calls to go
    assert seconds_left(11, 91, 1, 100.0, 11, 102.0) == pytest.approx(16.0)
    assert seconds_left(1, 91, 1, 100.0, 1, 100.0) != seconds_left(1, 91, 1, 100.0, 1, 100.0)
    line = progress_line(11, 91, 3.0, 16.0)
    assert line.startswith("sampling: 11/91 network calls") and "~16.0 s left" in line
    assert "measuring" in progress_line(1, 91, 0.5, float("nan"))
    assert 'value="11" max="91"' in progress_html(11, 91)


def test_run_shows_progress_preview_and_a_busy_button(page, monkeypatch):
    """While it samples: one counter (status and bar from the same report), x̂_0 previews
    before the result, the Inpaint button busy; a second click is answered, not dropped."""
    from priorpaint.app import ui

    page.cfg.preview_every = 5
    page.min_preview_seconds = 0.0   # each preview shown (a tiny run is faster than 5/s)
    said = []
    monkeypatch.setattr(ui.gr, "Info", lambda text, *a, **k: said.append(text))
    editor, source, _, _ = page.take_upload(str(DIGIT))
    run = page.run(painted_editor(editor), source, "painted", "ddpm", "auto", None, None, None,
                   1, 0)
    first = named(next(run))
    assert first["button"]["value"] == ui.BUSY_LABEL and first["gallery"] == []
    page.busy()                          # a second click while it samples
    assert said and "in progress" in said[-1]
    updates = [first] + [named(u) for u in run]
    previews = [k for k, u in enumerate(updates) if isinstance(u["preview"], np.ndarray)]
    done = next(k for k, u in enumerate(updates) if str(u["status"]).startswith("done"))
    assert len(previews) >= 4 and previews[0] < done   # 1, 6, 11, 16, 20 of 20 calls
    for u in updates:
        if str(u["status"]).startswith("sampling: ") and "/" in u["status"]:
            done_calls = int(u["status"].split()[1].split("/")[0])
            assert f'value="{done_calls}" max="20"' in u["bar"]   # the bar says the same
    assert updates[-1]["button"]["value"] == "Inpaint" and updates[-1]["bar"] == ""
    said.clear()
    page.busy()                          # after the run: nothing to say
    assert said == []


def test_results_are_crisp_whole_and_compared_with_the_masked_input(page):
    """Results are enlarged by one whole factor (nearest-neighbour: every pixel a block of
    equal values), laid out on a near-square grid, and the before/after slider pairs the
    masked input with the clicked sample at the same size."""
    from priorpaint.app.ui import gallery_columns, view_factor

    assert [gallery_columns(n) for n in (1, 2, 4, 5, 16)] == [1, 2, 2, 3, 4]
    assert view_factor((32, 32)) == 8 and view_factor((321, 481)) == 1
    editor, source, _, _ = page.take_upload(str(DIGIT))
    updates, (_, _, gallery, _) = finish(page.run(painted_editor(editor), source, "painted",
                                                  "ddpm", "auto", None, None, None, 3, 0))
    last = updates[-1]
    factor = last["last"]["factor"]
    assert factor == 16 and last["gallery"]["columns"] == 2
    for (view, _), (small, _) in zip(last["gallery"]["value"], gallery, strict=True):
        assert view.shape == (256, 256)
        assert np.array_equal(view, small.repeat(factor, 0).repeat(factor, 1))   # no blur
    before, after = last["compare"]
    assert before.shape == after.shape == (256, 256)
    assert before[5 * factor, 6 * factor] == 128 and np.array_equal(after, last["gallery"]["value"][0][0])
    picked = page.compare_sample(last["last"], gr.SelectData(None, {"index": 2, "value": None}))
    assert np.array_equal(picked[1], last["gallery"]["value"][2][0])
    assert np.array_equal(picked[0], before)


def test_errors_stay_in_the_page_until_the_next_action(page, tmp_path):
    """A user error is written into the page's line (then raised: toast, log line, API
    error); the next good action overwrites it."""
    from priorpaint.app.ui import RUN_OUTPUTS, shows_errors

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    upload = shows_errors(page.take_upload, 4, 3)
    steps = iter(upload(str(notes)))
    editor, source, masked, note = next(steps)
    assert note.startswith("❌ notes.txt is not an image")
    with pytest.raises(gr.Error, match="notes.txt is not an image"):
        next(steps)
    (editor, source, masked, note), = list(upload(str(DIGIT)))   # a good upload clears it
    assert source is not None and not note.startswith("❌")
    editor, source, _, _ = page.take_upload(str(DIGIT))
    run = shows_errors(page.run, len(RUN_OUTPUTS), RUN_OUTPUTS.index("status"))
    steps = iter(run(editor["value"], source, "painted", "ddpm", "auto", None, None, None, 1, 0))
    assert named(next(steps))["status"] == "❌ the mask has nothing to inpaint: paint over " \
        "the part of the image to fill in (brush in the editor), or choose a generated mask kind"
    with pytest.raises(gr.Error, match="nothing to inpaint"):
        next(steps)


def test_help_lists_the_pages_own_keys():
    import subprocess
    import sys

    from priorpaint.app.engine import APP_KEYS

    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    own = out.stdout.split("== All keys")[0]
    for key in (*APP_KEYS, "ckpt", "sampler", "fit"):
        assert f"  {key}=" in own, key
    assert "Configuration groups" not in out.stdout and "experiment:" not in out.stdout
    assert "preview_every: 25" in out.stdout   # and every key with its default


def test_page_follows_the_chosen_prior(tmp_path, one_thread):
    """Each prior its own examples (examples_by_prior, else examples), checkpoint names shown
    as file names with the folder as a hint, and the image in hand refitted on a switch:
    the size note names the new prior's size, colour is converted (with a note) for a grey
    prior and kept for an RGB one."""
    from types import SimpleNamespace

    from priorpaint.app.ui import checkpoint_label, example_images

    folder = tmp_path / "priors"
    save_tiny_prior(folder / "grey8.ckpt", channels=1, size=(8, 8), steps=20)
    save_tiny_prior(folder / "run" / "rgb16.ckpt", channels=3, size=(16, 16), steps=20)
    page = Page(app_config(folder, tmp_path / "runs",
                           f"+examples_by_prior={{grey*: {ROOT / 'examples' / 'mnist'}}}"))
    assert page.checkpoint_choices() == [("grey8.ckpt", "grey8.ckpt"),
                                         ("rgb16.ckpt · in run/", "run/rgb16.ckpt")]
    assert checkpoint_label("a/b/c.ckpt") == "c.ckpt · in a/b/"
    assert all("t10k_" in Path(e).name for e in page.examples_for("grey8.ckpt"))
    assert [Path(e).name for e in page.examples_for("run/rgb16.ckpt")][0] == "digit_00.png"
    by_prior = {"mnist32": "examples/mnist", "photos*": str(tmp_path / "none"), "*": None}
    assert example_images(by_prior, "d", "outputs/mnist32.ckpt")[0].endswith("label1.png")
    assert example_images(by_prior, "d", "photos64.ckpt") == []   # folder not there yet
    assert example_images(by_prior, "d", "last.ckpt") == []       # "*": none

    # an example of the grey prior, then the RGB prior: the note follows
    _, source, _, note = page.take_example("grey8.ckpt", SimpleNamespace(index=0))
    assert "32×32" in note and "8×8" in note
    gallery, note, editor = page.follow_prior("run/rgb16.ckpt", source)
    assert "16×16" in note and "8×8" not in note and "repeated on 3 channels" in note
    assert Path(gallery["value"][0]).name == "digit_00.png"

    colour = tmp_path / "colour.png"
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
    Image.fromarray(pixels).save(colour)
    editor, source, _, note = page.take_upload(str(colour), "run/rgb16.ckpt")
    assert note == "" and source.pixels.shape == (16, 16, 3)    # kept colour for RGB
    _, note, editor = page.follow_prior("grey8.ckpt", source)
    assert "colour.png is colour but the prior is grey: converted to grey" in note
    grey = np.asarray(Image.fromarray(pixels).convert("L"))
    background = editor["value"]["background"]
    k = background.shape[0] // 16   # shown enlarged by a whole factor
    assert np.array_equal(background[::k, ::k, 0], grey)
    assert np.array_equal(background[::k, ::k, 2], grey)
    image = page.current_input(editor["value"], source, "grey8.ckpt")
    assert image.pixels.shape == (16, 16, 1) and np.array_equal(image.pixels[..., 0], grey)
    # what the run inpaints is the converted image: a run's input file is grey
    mask = torch.ones(1, 16, 16)
    mask[:, 4:8, 4:8] = 0
    result = engine.run_inpainting(page.prior("grey8.ckpt"), engine.RunRequest(
        image=image, mask=mask, sampler="ddpm"), page.options, tmp_path / "runs")
    assert np.array_equal(np.asarray(Image.open(result.input_file)), grey)


def test_editor_is_crisp_and_its_tools_scale_with_the_image(page, tmp_path):
    """The editor shows an image enlarged by a whole factor (crisp); brush and eraser sizes
    are image pixels times that factor and can be set; clearing the mask keeps the image;
    a generated mask clears the stroke; invert and an uploaded mask file work."""
    from priorpaint.app.ui import brush_default, editor_factor

    assert editor_factor((32, 32)) == 14 and editor_factor((321, 481)) == 1
    assert brush_default((32, 32)) == 2 and brush_default((321, 481)) == 20
    editor, source, _, _ = page.take_upload(str(DIGIT))
    k = editor_factor((16, 16))
    assert editor["value"]["background"].shape[:2] == (16 * k, 16 * k)
    assert editor["brush"].default_size == editor["eraser"].default_size == 1 * k
    tools = page.set_brush(4, editor["value"], source)
    assert tools["brush"].default_size == tools["eraser"].default_size == 4 * k

    painted = painted_editor(editor)
    # erasing a block (whole image pixels' worth of canvas) frees exactly those pixels
    layer = painted["layers"][0].copy()
    layer[4 * k:6 * k, 5 * k:7 * k] = 0
    mask = page.current_mask({"layers": [layer]}, source, "painted", 0)[0].numpy()
    expected = np.ones((16, 16), np.float32)
    expected[4:10, 5:12] = 0
    expected[4:6, 5:7] = 1
    assert np.array_equal(mask, expected)
    # a brush edge grazing a block (under half of it) does not make a hole
    layer = np.zeros_like(layer)
    layer[0:k // 3, 0:k] = 255
    assert bool(page.current_mask({"layers": [layer]}, source, "painted", 0).all())

    cleared = page.clear_mask(painted, source)
    assert cleared["value"]["layers"] == []
    assert np.array_equal(cleared["value"]["background"], editor["value"]["background"])
    assert page.mask_kind_changed("thick", painted, source)["value"]["layers"] == []
    assert page.mask_kind_changed("painted", painted, source) == gr.skip()

    inverted = page.current_mask(painted, source, "painted", 0, invert=True)[0].numpy()
    assert np.array_equal(inverted, 1 - page.current_mask(painted, source, "painted", 0)[0].numpy())
    mask_png = tmp_path / "hole.png"
    hole = np.full((16, 16), 255, np.uint8)
    hole[2:5, 3:9] = 0
    Image.fromarray(hole).save(mask_png)
    path, kind = page.take_mask_file(str(mask_png))
    assert kind == "file"
    from_file = page.current_mask(painted, source, kind, 0, mask_path=path)[0].numpy()
    assert np.array_equal(from_file, (hole == 255).astype(np.float32))
    with pytest.raises(gr.Error, match="no mask file"):
        page.current_mask(painted, source, "file", 0)
    _, (status, _, gallery, _) = finish(page.run(painted, source, "file", "ddpm", "auto", None,
                                                 None, None, 1, 0, None, True, path))
    assert status.startswith("done")   # inverted file mask: the known part is the hole
    original = np.asarray(Image.open(DIGIT))
    assert np.array_equal(gallery[0][0][hole == 0], original[hole == 0])


def test_history_keeps_recent_runs_and_reloads_one(page):
    """Each finished run joins the visitor's history (newest first, `history` kept); a click
    on one brings back its results, downloads and settings."""
    from priorpaint.app.ui import RELOAD_OUTPUTS

    page.cfg.history = 2
    editor, source, _, _ = page.take_upload(str(DIGIT))
    painted = painted_editor(editor)
    history, runs = [], []
    for seed, n in ((5, 1), (6, 2), (7, 1)):
        updates, _ = finish(page.run(painted, source, "painted", "ddpm", "ddim10", None, None,
                                     0.5, n, seed, None, False, None, history))
        history = updates[-1]["history"]
        runs.append(updates[-1])
        assert [label for _, label in updates[-1]["past"]] == [e["label"] for e in history]
    assert len(history) == 2 and "seed 7" in history[0]["label"] and "seed 6" in history[1]["label"]
    assert "10 calls" in history[0]["label"]
    back = dict(zip(RELOAD_OUTPUTS, page.reload_run(
        history, gr.SelectData(None, {"index": 1, "value": None})), strict=True))
    second = runs[1]
    assert back["seed"] == 6 and back["n_samples"] == 2 and back["sampler"] == "ddpm"
    assert back["steps"] == "ddim10" and back["eta"] == 0.5
    assert back["files"] == second["files"] and back["status"].endswith(second["status"])
    assert len(back["gallery"]["value"]) == 2
    for (view, _), (shown, _) in zip(back["gallery"]["value"], second["gallery"]["value"],
                                     strict=True):
        assert np.array_equal(view, shown)
    assert np.array_equal(back["compare"][1], second["compare"][1])
    nothing = page.reload_run([], gr.SelectData(None, {"index": 0, "value": None}))
    assert all(x == gr.skip() for x in nothing)
