#!/usr/bin/env python3
"""Writes tests/fixtures/torch_ckpt/: PyTorch checkpoints that layers/torch_ckpt.c must read bit-exactly,
and pickles it must refuse. See tests/fixtures/torch_ckpt/README.md for what each file holds.

Run: ${PYTHON:-python3} scripts/make_torch_ckpt_fixtures.py   (needs torch, safetensors; written with torch 1.13)
"""
import collections
import io
import os
import pickle
import struct
import zipfile

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torch_ckpt")
MAGIC = 0x1950A86A20F9469CFC6C


def state_object():
    """Nested dicts, shared storages, views with offsets, non-contiguous tensors, every dtype."""
    g = torch.Generator().manual_seed(18)
    base = torch.randn(64, generator=g)
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 3, generator=g))
        lin.bias.copy_(torch.randn(2, generator=g))
    ints = torch.arange(-6, 18, dtype=torch.int64)
    unet = collections.OrderedDict()
    unet["conv_in.weight"] = base.view(4, 4, 2, 2)                  # the whole storage
    unet["conv_in.bias"] = base[3:7]                                # offset view into the same storage
    unet["proj.weight"] = base.view(8, 8).t()                       # transposed: non-contiguous
    unet["every_third"] = base[1::3]                                # strided with an offset
    unet["block"] = base.view(8, 8)[2:5, 1:7]                       # 2-d window: offset + row stride
    unet["scalar"] = base[10]                                       # 0-dim view
    unet["empty"] = torch.zeros(0, 3)
    dtypes = collections.OrderedDict()
    dtypes["f64"] = torch.randn(3, 5, generator=g, dtype=torch.float64).t()
    dtypes["f16"] = (base[:12] * 3).half().view(3, 4)
    dtypes["bf16"] = (base[12:24] * 5).bfloat16().view(4, 3).t()
    dtypes["i64"] = ints.view(4, 6)[:, 1::2]
    dtypes["i32"] = ints.int()[5:]
    dtypes["i16"] = ints.short()
    dtypes["i8"] = ints.to(torch.int8)
    dtypes["u8"] = (ints + 6).to(torch.uint8)
    dtypes["bool"] = ints % 3 == 0
    return {
        "state_dict_unet": unet,
        "dtypes": dtypes,
        "linear": lin.state_dict(),                                 # OrderedDict with _metadata (BUILD)
        "param": torch.nn.Parameter(base[40:44].clone()),           # _rebuild_parameter
        "list": [ints[:3], (base[50:52], "not a tensor", 3.5), None],
        "step": 1234,
        "name": "fixture",
        "flag": True,
    }


def flat(obj, prefix=""):
    """The key paths the C reader lists (dict keys and indices joined with '/')."""
    if isinstance(obj, torch.Tensor):
        yield prefix or "tensor", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from flat(v, f"{prefix}/{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flat(v, f"{prefix}/{i}" if prefix else str(i))


def write_expected(obj, path):
    """expected.txt: one line per tensor 'name dtype ndim d0 d1 .. offset nbytes' into expected.raw,
    the contiguous bytes torch holds for it."""
    lines, raw = [], bytearray()
    for name, t in flat(obj):
        t = t.detach().contiguous()
        b = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        dt = str(t.dtype).replace("torch.", "")
        lines.append(" ".join([name, dt, str(t.dim())] + [str(s) for s in t.shape] + [str(len(raw)), str(len(b))]))
        raw += b
    with open(path + ".txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(path + ".raw", "wb") as f:
        f.write(raw)


def rezip(src, dst, prefix, extra=None, compress=False):
    """The zip checkpoint src rewritten under another record prefix (torch 2.x writes 'archive/'),
    with extra records (e.g. byteorder) and optionally deflated entries."""
    zin = zipfile.ZipFile(src)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(prefix + "/" + info.filename.split("/", 1)[1], zin.read(info))
        for name, data in (extra or {}).items():
            zout.writestr(prefix + "/" + name, data)


def legacy_v1(path):
    """A legacy file as torch 0.1-0.3 wrote them (torchvision's vgg16-397923af.pth era): tensors
    rebuilt by torch._utils._rebuild_tensor(storage, offset, size, stride), the Python 2 form of
    OrderedDict (a list of [key, value] pairs), persistent ids with view metadata None."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(3, 2, 3, 3, generator=g)
    b = torch.randn(3, generator=g)
    storages = collections.OrderedDict()

    class Rebuild:
        def __init__(self, t):
            self.t = t

        def __reduce__(self):
            key = str(len(storages))
            storages[key] = self.t.storage()
            return (torch._utils._rebuild_tensor, (PersistentStorage(key, self.t), self.t.storage_offset(),
                                                   tuple(self.t.size()), self.t.stride()))

    class PersistentStorage:
        def __init__(self, key, t):
            self.key, self.t = key, t

    class OldDict:
        def __init__(self, items):
            self.items = items

        def __reduce__(self):
            return (collections.OrderedDict, ([[k, v] for k, v in self.items],))

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, PersistentStorage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.t.storage().size(), None)
            return None

    obj = OldDict([("features.0.weight", Rebuild(w)), ("features.0.bias", Rebuild(b))])
    f = io.BytesIO()
    pickle.dump(MAGIC, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, f,
                protocol=2)
    P(f, protocol=2).dump(obj)
    pickle.dump(list(storages.keys()), f, protocol=2)
    for s in storages.values():
        f.write(struct.pack("<q", s.size()))
        f.write(torch.tensor(s, dtype=torch.float32).numpy().tobytes())
    with open(path, "wb") as out:
        out.write(f.getvalue())
    return {"features.0.weight": w, "features.0.bias": b}


def evil(path_zip_template, name, pkl):
    """The zip checkpoint template with its data.pkl replaced by pkl."""
    zin = zipfile.ZipFile(path_zip_template)
    with zipfile.ZipFile(os.path.join(OUT, name), "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = pkl if info.filename.endswith("/data.pkl") else zin.read(info)
            zout.writestr(info.filename.split("/", 1)[0] + "/" + info.filename.split("/", 1)[1], data)


class RunsShell:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class Evaluates:
    def __reduce__(self):
        return (eval, ("1+1",))


def main():
    os.makedirs(OUT, exist_ok=True)
    obj = state_object()
    torch.save(obj, os.path.join(OUT, "state_zip.pt"))
    torch.save(obj, os.path.join(OUT, "state_legacy.pt"), _use_new_zipfile_serialization=False)
    write_expected(obj, os.path.join(OUT, "expected"))
    # torch 2.x layout: 'archive/' prefix and a byteorder record; and the same deflated.
    rezip(os.path.join(OUT, "state_zip.pt"), os.path.join(OUT, "state_archive.pt"), "archive",
          {"byteorder": b"little"})
    rezip(os.path.join(OUT, "state_zip.pt"), os.path.join(OUT, "state_deflated.pt"), "archive", compress=True)
    rezip(os.path.join(OUT, "state_zip.pt"), os.path.join(OUT, "big_endian.pt"), "archive", {"byteorder": b"big"})
    v1 = legacy_v1(os.path.join(OUT, "legacy_v1.pth"))
    write_expected(v1, os.path.join(OUT, "legacy_v1_expected"))
    # A Lightning-style checkpoint: tensors under "state_dict" are listed without the prefix.
    t = torch.arange(6, dtype=torch.float32).view(2, 3)
    torch.save({"state_dict": {"model.w": t}, "epoch": 3, "optimizer_states": [{"exp_avg": t[0]}]},
               os.path.join(OUT, "lightning.ckpt"))
    torch.save(t[1], os.path.join(OUT, "bare_tensor.pt"))   # a single tensor: listed as "tensor"

    # The SD fixture as PyTorch files: the single-file checkpoint as a Lightning .ckpt (legacy format, as
    # the SD 1.x releases), and the diffusers VAE as a zip-format f16 diffusion_pytorch_model.bin.
    from safetensors.torch import load_file
    sd = os.path.join(os.path.dirname(OUT), "sd", "sd1_tiny")
    ldm = load_file(os.path.join(sd, "ldm.safetensors"))
    torch.save({"state_dict": ldm, "global_step": 5, "epoch": 1}, os.path.join(OUT, "sd1_tiny_ldm.ckpt"),
               _use_new_zipfile_serialization=False)
    vae = load_file(os.path.join(sd, "model", "vae", "diffusion_pytorch_model.safetensors"))
    torch.save({k: v.half() for k, v in vae.items()}, os.path.join(OUT, "sd1_tiny_vae_f16.bin"))
    # The sd1_tiny CLIP text encoder as transformers' pytorch_model.bin (zip format).
    te = load_file(os.path.join(sd, "model", "text_encoder", "model.safetensors"))
    torch.save(te, os.path.join(OUT, "sd1_tiny_text_encoder.bin"))

    # Refused pickles, each inside an otherwise valid zip checkpoint.
    template = os.path.join(OUT, "bare_tensor.pt")
    evil(template, "evil_global.pt", b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwnedq\x00\x85R.")
    evil(template, "evil_reduce.pt", pickle.dumps(RunsShell(), protocol=2))          # posix.system via __reduce__
    evil(template, "evil_eval.pt", pickle.dumps(Evaluates(), protocol=4))            # STACK_GLOBAL builtins.eval
    evil(template, "evil_inst.pt", b"(X\x04\x00\x00\x00echoios\nsystem\n.")          # protocol 0 INST
    # The fuzzer's seeds are five of these files: build/fuzz/fuzz_replay_torch_ckpt --write-seeds
    # tests/fuzz/corpus/torch_ckpt copies them (tests/fuzz/fuzz_torch_ckpt.c).
    for f in sorted(os.listdir(OUT)):
        print(f"{f}: {os.path.getsize(os.path.join(OUT, f))} bytes")


if __name__ == "__main__":
    main()
