"""BLIP image captioning on blip-tiny (trained to caption the shipped images): graph parity at
other shapes, compiled backends token-equal to HF generate, preprocessing equal to
BlipImageProcessor, bad images as one-line errors, and every action through run.main."""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading

import numpy as np
import onnx
import pytest
from PIL import Image

import run as run_py
from conftest import one_line_error
from NNDF.base.errors import UsageError
from NNDF.cli import parse_args
from NNDF.export.onnx_export import MODEL_FILE, exported, verify_graph
from NNDF.graphs.axes import BATCH, KEPT, PAST, SEQ
from NNDF.kinds.image_to_text.graphs import graph_specs
from NNDF.models.artifacts import artifact_subdir
from NNDF.models.images import ImageSettings, MAX_PIXELS, as_source, open_image, pixel_values
from NNDF.registry import get_family
from BLIP import frameworks as blip_frameworks, onnxrt as blip_onnxrt, trt as blip_trt
from BLIP.tiny import CAPTIONS, IMAGES

# Left-padded batch of 3: an off-caption prefix, a prefix that contradicts the image, and none.
PROMPTS = ["images/green_square.png | the lighthouse keeper", "images/blue_stripes.png | a red",
           "images/yellow_triangle.png"]
NEW, MIN_NEW = "16", "12"   # forced past each caption's end, so cached lengths pass 10


@pytest.fixture(scope="module")
def wd(workdir):
    return str(workdir.root)


def cfg_for(wd, *flags, action="run", backends=("frameworks",)):
    return parse_args([action, "BLIP", *backends, "--working-dir", wd, *flags])


@pytest.fixture(scope="module")
def family():
    return get_family("BLIP")


@pytest.fixture(scope="module")
def blip(family, wd):
    return family.load(cfg_for(wd))


def gen_flags(use_cache: bool, beams: int, batch: int):
    return (*(["--use-cache"] if use_cache else []), "--num-beams", str(beams), "--batch-size", str(batch),
            "--use-mask", "--output-seq-len", NEW, "--min-output-len", MIN_NEW)


@pytest.fixture(scope="module")
def reference(blip, wd):
    """HF generate's tokens for PROMPTS[:batch], computed once per (beams, batch)."""
    @functools.cache
    def tokens(beams: int, batch: int) -> np.ndarray:
        cfg = cfg_for(wd, *gen_flags(True, beams, batch))
        ids, mask = blip.encode_prompts(PROMPTS[:batch], True, cfg.generation.max_new_tokens)
        return blip_frameworks.make_backend(blip, cfg, None).generate(ids, mask, cfg.generation).tokens
    return tokens


# --------------------------------------------------------------------------- graphs
def test_graphs_match_pytorch_at_other_shapes(blip, family, workdir):
    specs = graph_specs(blip.model, family.layout(blip))
    other = {"encoder": ({BATCH: 1}, {BATCH: 3}), "cache_generator": ({BATCH: 1}, {BATCH: 3}),
             "decoder": ({BATCH: 1, SEQ: 1, PAST: 0}, {BATCH: 3, SEQ: 1, PAST: 1}, {BATCH: 3, SEQ: 1, PAST: 12},
                         {BATCH: 1, SEQ: 3, PAST: 0}, {BATCH: 3, SEQ: 5, PAST: 11, KEPT: 1}),
             "decoder_nocache": ({BATCH: 1, SEQ: 1}, {BATCH: 3, SEQ: 9}, {BATCH: 3, SEQ: 4, KEPT: 1})}
    for name, spec in specs.items():
        art = exported(workdir, artifact_subdir(family, blip), blip.model, spec, blip.source_key, fp16=False)
        for sizes in other[name]:
            assert sizes != spec.trace_sizes
            assert verify_graph(blip.model, spec, art.file(MODEL_FILE), sizes) < 1e-4
    # image tokens are a model constant: static in the graph, so TensorRT can size its buffers
    art = exported(workdir, artifact_subdir(family, blip), blip.model, specs["encoder"], blip.source_key, fp16=False)
    dims = onnx.load(str(art.file(MODEL_FILE)), load_external_data=False).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 17, 32]


def test_tiny_captions_are_learned_and_not_degenerate(blip, wd, reference):
    cfg = cfg_for(wd, "--batch-size", "4", "--output-seq-len", "12")
    names = list(CAPTIONS)
    ids, mask = blip.encode_prompts([f"images/{n}" for n in names], False, 12)
    out = blip_frameworks.make_backend(blip, cfg, None).generate(ids, mask, cfg.generation).tokens
    assert [blip.output_text(n, row) for n, row in zip(names, out)] == [CAPTIONS[n] for n in names]
    forced = reference(1, 3)
    assert forced.shape == (3, int(NEW)) and all(len(set(row.tolist())) >= 5 for row in forced)


# --------------------------------------------------------------------------- compiled backends
@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
@pytest.mark.parametrize("batch", [1, 3], ids=["batch1", "batch3"])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_onnxrt_tokens_equal_hf_generate(blip, workdir, wd, reference, use_cache, batch, beams):
    cfg = cfg_for(wd, *gen_flags(use_cache, beams, batch), backends=("onnxrt",))
    ids, mask = blip.encode_prompts(PROMPTS[:batch], True, cfg.generation.max_new_tokens)
    assert batch == 1 or (mask == 0).any()                  # batch 3 really is left-padded
    backend = blip_onnxrt.make_backend(blip, cfg, workdir)
    # every graph the run uses, as a Triton export would list them
    assert list(backend.steps.graphs()) == (["encoder", "cache_generator", "decoder"] if use_cache
                                            else ["encoder", "decoder_nocache"])
    got = backend.generate(ids, mask, cfg.generation).tokens
    np.testing.assert_array_equal(got, reference(beams, batch))


@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "cuda-graph"])
@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_trt_tokens_equal_hf_generate(standin, blip, workdir, wd, reference, use_cache, beams, graphs):
    cfg = cfg_for(wd, *gen_flags(use_cache, beams, 3), *(["--use-cuda-graph"] if graphs else []), backends=("trt",))
    ids, mask = blip.encode_prompts(PROMPTS, True, cfg.generation.max_new_tokens)
    backend = blip_trt.make_backend(blip, cfg, workdir)
    for _ in range(3 if graphs else 1):     # with graphs: capture, then replay
        np.testing.assert_array_equal(backend.generate(ids, mask, cfg.generation).tokens, reference(beams, 3))
    assert standin._errors == [] and standin._warnings == []   # no default-stream enqueue either
    assert not graphs or all(s._graphs.replays > 0 for s in backend.sessions.values())
    # the vision side runs once per image, the decoder per image and beam
    decoder = "decoder" if use_cache else "decoder_nocache"
    assert backend.sessions["encoder"]._limits[BATCH] == (3, 3, 3)
    assert backend.sessions[decoder]._limits[BATCH] == (3 * beams,) * 3


# Captions of different lengths, two of them wrong for their image, so the logits are not all
# one-hot and the rows are right-padded: teacher forcing away from the shapes the graphs were traced at.
SCORED = [{"image": str(IMAGES / "red_circle.png"), "text": "a red circle on a white background"},
          {"image": str(IMAGES / "blue_stripes.png"), "text": "a green square"},
          {"image": str(IMAGES / "yellow_triangle.png"), "text": "blue stripes on a black background and more"}]


def scoring_batch(blip):
    from NNDF.kinds.image_to_text.model import ImagePrompts
    from NNDF.models.tokenizers import pad_rows

    seqs = [blip.caption_sequence(row, 2) for row in SCORED]
    ids, mask = pad_rows([seq for seq, _ in seqs], blip.generation_defaults["pad_token_id"], "right")
    return ImagePrompts(np.stack([pixels for _, pixels in seqs]), ids), mask


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
@pytest.mark.parametrize("backend_name", ["onnxrt", "trt"])
def test_teacher_forced_logits_equal_pytorch(request, blip, workdir, wd, use_cache, backend_name):
    """accuracy scores captions teacher-forced: every real position's logits equal PyTorch's, with
    the cache (prefill, then one token a step) and without, on onnxrt and the TensorRT stand-in."""
    if backend_name == "trt":
        request.getfixturevalue("standin")
    prompts, mask = scoring_batch(blip)
    flags = (*(["--use-cache"] if use_cache else []), "--batch-size", "3")
    want = blip_frameworks.make_backend(blip, cfg_for(wd, *flags), None).logits(prompts, mask)
    maker = blip_onnxrt if backend_name == "onnxrt" else blip_trt
    backend = maker.make_backend(blip, cfg_for(wd, *flags, action="accuracy", backends=(backend_name,)), workdir)
    real = mask.astype(bool)
    for got in (backend.logits(prompts, mask), backend.cached_logits(prompts, mask, 3)):
        assert got.shape == want.shape
        assert np.abs(got - want)[real].max() < 1e-4


def test_accuracy_scores_captions(capsys, wd, tmp_path):
    """Bare accuracy scores the shipped captions; a caption file of one's own, with a wrong caption,
    scores worse; a LAMBADA text file is refused in one line naming what a row needs."""
    out = tmp_path / "acc.json"
    code, stdout, err = run_py.main(["accuracy", "BLIP", "frameworks", "onnxrt", "--use-cache", "--working-dir", wd,
                                     "--save-output-fpath", str(out)]), *capsys.readouterr()
    assert code == 0 and "caption accuracy" in stdout, err
    shipped = json.loads(out.read_text())
    assert shipped["dataset"].endswith("captions.jsonl") and shipped["num_samples"] == len(CAPTIONS)
    ours = tmp_path / "captions.jsonl"
    ours.write_text("".join(json.dumps(row) + "\n" for row in SCORED))
    assert run_py.main(["accuracy", "BLIP", "frameworks", "onnxrt", "--working-dir", wd, "--dataset-path",
                        str(ours), "--tokens-to-generate", "2", "--save-output-fpath", str(out)]) == 0
    capsys.readouterr()
    mixed = json.loads(out.read_text())["results"]
    for name in ("frameworks", "onnxrt"):
        assert mixed[name]["token_perplexity"] > shipped["results"][name]["token_perplexity"]
    assert abs(mixed["onnxrt"]["token_perplexity"] / mixed["frameworks"]["token_perplexity"] - 1) < 1e-3
    one_line_error(capsys, "accuracy", "BLIP", "--working-dir", wd, "--dataset-path",
                   str(IMAGES.parent.parent / "NNDF" / "data" / "lambada_sample.jsonl"), match='"image" is missing')


# --------------------------------------------------------------------------- images
def _images():
    base = open_image(str(IMAGES / "yellow_triangle.png")).resize((50, 40))   # not square, not model-sized
    transparent = base.convert("P")
    transparent.info["transparency"] = 3
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    return {"RGB": base, "L": base.convert("L"), "RGBA": rgba, "LA": base.convert("LA"), "P+transparency": transparent}


@pytest.mark.parametrize("mode", list(_images()))
def test_preprocessing_equals_blip_image_processor(mode, tmp_path):
    from transformers import BlipImageProcessor

    image = _images()[mode]
    for size in (32, 384):
        expected = BlipImageProcessor(size={"height": size, "width": size})(image, return_tensors="np")["pixel_values"]
        got = pixel_values([image], ImageSettings(size, size))
        assert got.dtype == np.float32 and got.shape == (1, 3, size, size)
        np.testing.assert_array_equal(got, expected)
    path = tmp_path / "img.png"      # and the same through a file
    image.save(path)
    reread = open_image(str(path))
    np.testing.assert_array_equal(pixel_values([reread], ImageSettings(32, 32)),
                                  BlipImageProcessor(size={"height": 32, "width": 32})(reread, return_tensors="np")["pixel_values"])


def test_image_url_through_urllib(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(IMAGES))
    handler.log_message = lambda *a: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/red_circle.png"
            s = ImageSettings(32, 32)
            np.testing.assert_array_equal(pixel_values([open_image(url)], s),
                                          pixel_values([open_image(str(IMAGES / "red_circle.png"))], s))
            with pytest.raises(UsageError, match="HTTP 404"):
                open_image(url.replace("red_circle", "nothing"))
        finally:
            server.shutdown()
    assert as_source("https:/host/a.png") == "https://host/a.png"   # what argparse's Path makes of a URL




def _checkpoint(tmp_path, *inputs: str):
    path = tmp_path / "mine.toml"
    path.write_text("".join(f'[BLIP.all.default.all.ex{i}]\ninput = "{x}"\nlabel = "a"\n' for i, x in enumerate(inputs)))
    return str(path)


def test_bad_images_are_one_line_errors(capsys, wd, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "cut.png").write_bytes((IMAGES / "red_circle.png").read_bytes()[:80])
    Image.new("1", (8000, 7000)).save(tmp_path / "huge.png")     # 56 megapixels, a few KB on disk
    (tmp_path / "folder.png").mkdir()
    cases = {"missing.png": "does not exist", "notes.png": "is not an image file", "cut.png": "cannot read image",
             "huge.png": "above the 50-megapixel limit", "folder.png": "is not a file"}
    for name, match in cases.items():
        ck = _checkpoint(tmp_path, str(tmp_path / name))
        one_line_error(capsys, "run", "BLIP", "--working-dir", wd, "--checkpoint", ck, "--iterations", "1", match=match)
    one_line_error(capsys, "run", "BLIP", "--working-dir", wd, "--checkpoint", _checkpoint(tmp_path, " | a red"), match="names no image")
    batch = tmp_path / "batch.toml"   # a list input is one batch, as in the demo's files
    batch.write_text('[BLIP.all.default.all.two]\ninput = ["images/red_circle.png | a red", "images/red_circle.png"]\n'
                     'label = ["a", "b"]\n')
    one_line_error(capsys, "run", "BLIP", "--working-dir", wd, "--batch-size", "2", "--iterations", "1",
         "--checkpoint", str(batch), match="add --use-mask")
    one_line_error(capsys, "chat", "BLIP", "--working-dir", wd, "--image", str(tmp_path / "huge.png"), match="megapixel limit")
    assert Image.open(tmp_path / "huge.png").size[0] * 7000 > MAX_PIXELS


def test_grayscale_and_rgba_files_are_captioned(capsys, wd, tmp_path):
    red = open_image(str(IMAGES / "red_circle.png"))
    red.convert("L").save(tmp_path / "gray.png")
    red.convert("RGBA").save(tmp_path / "rgba.png")
    out_file = tmp_path / "r.json"
    ck = _checkpoint(tmp_path, str(tmp_path / "gray.png"), str(tmp_path / "rgba.png"))
    assert run_py.main(["run", "BLIP", "--working-dir", wd, "--checkpoint", ck, "--iterations", "1",
                        "--save-output-fpath", str(out_file)]) == 0
    outputs = [e["output"] for e in json.loads(out_file.read_text())["results"]["frameworks"]["examples"].values()]
    assert outputs[1] == CAPTIONS["red_circle.png"] and outputs[0]   # an opaque RGBA image is just RGB


# --------------------------------------------------------------------------- actions through run.main
def test_run_and_compare(capsys, wd, tmp_path):
    out_file = tmp_path / "run.json"
    assert run_py.main(["run", "BLIP", "frameworks", "onnxrt", "--working-dir", wd, "--use-cache", "--iterations", "1",
                        "--batch-size", "3", "--use-mask", "--save-output-fpath", str(out_file)]) == 0
    results = json.loads(out_file.read_text())["results"]
    fw, ort = results["frameworks"], results["onnxrt"]
    assert fw["accuracy"] == ort["accuracy"] == 1.0
    assert {k: v["output"] for k, v in fw["examples"].items()} == {k: v["output"] for k, v in ort["examples"].items()}
    assert fw["examples"]["yellow_triangle_prefix"]["output"].startswith("a yellow")
    capsys.readouterr()
    assert run_py.main(["compare", "BLIP", "frameworks", "onnxrt", "--working-dir", wd, "--iterations", "1"]) == 0
    out, _ = capsys.readouterr()
    assert "full (s)" in out and "DIFFERS" not in out


def test_chat_with_an_image(capsys, wd, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("a red\n\nthe lighthouse\nexit\n"))
    out_file = tmp_path / "chat.json"
    assert run_py.main(["chat", "BLIP", "frameworks", "onnxrt", "--use-cache", "--working-dir", wd,
                        "--image", str(IMAGES / "red_circle.png"), "--save-output-fpath", str(out_file)]) == 0
    turns = json.loads(out_file.read_text())["turns"]
    assert len(turns) == 3                                   # the empty line is a caption without prefix
    outs = [t["outputs"]["frameworks"]["output"] for t in turns]
    assert outs[:2] == [CAPTIONS["red_circle.png"]] * 2 and outs[2].startswith("the lighthouse")
    assert all(t["outputs"]["onnxrt"]["output"] == t["outputs"]["frameworks"]["output"] for t in turns)


def test_chat_without_an_image_flag_takes_the_image_on_each_line(capsys, wd, monkeypatch, tmp_path):
    """The bare `chat BLIP` (issue 24: it once refused without --image): each line names its image as
    checkpoint.toml's inputs do, `IMAGE` or `IMAGE | PREFIX`; a line naming no image is one error
    line and the chat goes on."""
    monkeypatch.setattr("sys.stdin", io.StringIO("images/red_circle.png\n | a red\nimages/red_circle.png | a red\nexit\n"))
    out_file = tmp_path / "chat.json"
    assert run_py.main(["chat", "BLIP", "frameworks", "onnxrt", "--use-cache", "--working-dir", wd,
                        "--save-output-fpath", str(out_file)]) == 0
    out = capsys.readouterr()[0]
    assert "each line: an image path or URL" in out and "names no image" in out
    turns = json.loads(out_file.read_text())["turns"]
    assert [t["outputs"]["frameworks"]["output"] for t in turns] == [CAPTIONS["red_circle.png"]] * 2
    assert all(t["outputs"]["onnxrt"]["output"] == t["outputs"]["frameworks"]["output"] for t in turns)


def test_benchmark_reports_vision_encoder_latency(capsys, wd, tmp_path):
    out_file = tmp_path / "bench.json"
    assert run_py.main(["benchmark", "BLIP", "frameworks", "onnxrt", "--working-dir", wd, "--use-cache",
                        "--output-seq-len", "6", "--iterations", "2", "--warmup", "1", "--batch-size", "2",
                        "--save-output-fpath", str(out_file)]) == 0
    data = json.loads(out_file.read_text())
    for r in data["results"].values():
        assert r["encoder_latency_s"] > 0 and r["decoder_latency_s"] > 0 and r["full_latency_s"] > 0
        assert r["new_tokens"] == 6 and r["same_tokens_as_frameworks"] is True
    assert data["settings"]["input_seq_len"] == 1          # the image and the [DEC] start token
    assert "encoder (ms)" in capsys.readouterr()[0]
