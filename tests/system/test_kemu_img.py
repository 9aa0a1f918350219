"""kemu-img against Debian's qemu-img as the oracle: create, info, check, convert, compare,
resize, measure, snapshot -l and error handling. Runs on this machine directly (no guest, no KVM).

The binary comes from $KEMU_IMG (default build/src/tools/kemu-img); qemu-img and qemu-io must be
installed.
"""
import json
import os
import re
import shutil
import struct
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEMU_IMG = os.path.abspath(os.environ.get("KEMU_IMG") or
                           os.path.join(ROOT, "build", "src", "tools", "kemu-img"))

pytestmark = [
    pytest.mark.skipif(not os.access(KEMU_IMG, os.X_OK), reason=f"{KEMU_IMG} is not built"),
    pytest.mark.skipif(not shutil.which("qemu-img") or not shutil.which("qemu-io"),
                       reason="qemu-img/qemu-io not installed"),
]

MiB = 1 << 20


def run(argv, cwd=None):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)


def kemu(*args, cwd=None):
    return run([KEMU_IMG, *args], cwd=cwd)


def qemu(*args, cwd=None):
    return run(["qemu-img", *args], cwd=cwd)


def qinfo(path, *extra):
    r = qemu("info", "--output=json", *extra, path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def kinfo(path, *extra):
    r = kemu("info", "--output=json", *extra, path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def qio(path, cmd, fmt="qcow2"):
    r = run(["qemu-io", "-f", fmt, "-c", cmd, path])
    assert r.returncode == 0, r.stdout + r.stderr


def qcheck(path):
    return qemu("check", path).returncode


def one_error_line(r):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("kemu-img: "), r.stderr
    return lines[0]


def make_mixed_raw(path, size=48 * MiB, seed=7):
    """Random 1 MiB chunks, explicitly written zero runs, holes and a few small data specks."""
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for mib in range(0, size // MiB):
            kind = rnd.choice(["data", "hole", "hole", "zero"])
            f.seek(mib * MiB)
            if kind == "data":
                f.write(rnd.randbytes(MiB))
            elif kind == "zero":
                f.write(bytes(MiB))
        for off in (12345, 5 * MiB + 7, size - 3):
            f.seek(off)
            f.write(b"xyz")


# ---- basics ----

def test_version_and_help():
    r = kemu("--version")
    assert r.returncode == 0 and r.stdout.startswith("kemu-img version")
    r = kemu("--help")
    assert r.returncode == 0 and "convert" in r.stdout and "create" in r.stdout


# ---- create ----

CREATE_CASES = [
    ("raw", [], "10M"),
    ("raw", ["-o", "preallocation=full"], "1M"),
    ("raw", ["-o", "preallocation=falloc"], "3M"),
    ("qcow2", [], "1G"),
    ("qcow2", ["-o", "cluster_size=4k"], "100M"),
    ("qcow2", ["-o", "compat=0.10"], "1.5M"),
    ("qcow2", ["-o", "cluster_size=2M,lazy_refcounts=on"], "2T"),
    ("qcow2", ["-o", "compression_type=zstd,refcount_bits=8"], "64M"),
    ("qcow2", ["-o", "refcount_bits=64", "-o", "cluster_size=512"], "1M"),
    ("qcow2", ["-o", "preallocation=metadata"], "20M"),
    ("qcow2", ["-o", "preallocation=falloc,cluster_size=128k"], "5M"),
    ("qcow2", ["-o", "preallocation=full"], "3M"),
    ("qcow2", ["-o", "size=7M"], None),
]


@pytest.mark.parametrize("fmt,opts,size", CREATE_CASES)
def test_create_matches_qemu(tmp_path, fmt, opts, size):
    (tmp_path / "k").mkdir()
    (tmp_path / "q").mkdir()
    args = ["create", "-f", fmt, *opts, "img"] + ([size] if size else [])
    rk = kemu(*args, cwd=tmp_path / "k")
    rq = qemu(*args, cwd=tmp_path / "q")
    assert rk.returncode == 0, rk.stderr
    assert rq.returncode == 0, rq.stderr
    assert rk.stdout == rq.stdout  # the "Formatting 'img', fmt=..." line
    ki, qi = qinfo(str(tmp_path / "k" / "img")), qinfo(str(tmp_path / "q" / "img"))
    for d in (ki, qi):
        d.pop("actual-size")
        d.pop("filename")
    assert ki == qi
    if fmt == "qcow2":
        assert qcheck(str(tmp_path / "k" / "img")) == 0


def test_create_backing(tmp_path):
    base = str(tmp_path / "base.qcow2")
    assert kemu("create", "-f", "qcow2", base, "64M").returncode == 0
    qio(base, "write -P 0x11 0 1M")
    for b in ("base.qcow2", base):
        top = str(tmp_path / "top.qcow2")
        r = kemu("create", "-f", "qcow2", "-b", b, "-F", "qcow2", top)
        assert r.returncode == 0, r.stderr
        assert f"backing_file={b} backing_fmt=qcow2" in r.stdout
        qi = qinfo(top)
        assert qi["virtual-size"] == 64 * MiB
        assert qi["backing-filename"] == b
        assert qi["full-backing-filename"] == base
        assert qi["backing-filename-format"] == "qcow2"
        assert qcheck(top) == 0
        # reads through the chain
        assert run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x11 0 1M", top]).returncode == 0
    # -o backing_file= with an explicit size, raw backing
    raw = str(tmp_path / "b.raw")
    assert kemu("create", "-f", "raw", raw, "2M").returncode == 0
    top = str(tmp_path / "t2.qcow2")
    r = kemu("create", "-f", "qcow2", "-o", "backing_file=b.raw,backing_fmt=raw", top, "4M")
    assert r.returncode == 0, r.stderr
    qi = qinfo(top)
    assert qi["virtual-size"] == 4 * MiB and qi["backing-filename-format"] == "raw"
    # -u: the backing file need not exist
    r = kemu("create", "-f", "qcow2", "-u", "-b", "nonexist.qcow2", "-F", "qcow2",
             str(tmp_path / "t3.qcow2"), "1M")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args,what", [
    (["create", "-f", "qcow2", "x", "1Q"], "Invalid image size"),
    (["create", "-f", "qcow2", "x", "-5"], ""),
    (["create", "-f", "foo", "x", "1M"], "Unknown file format 'foo'"),
    (["create", "-f", "qcow2", "x"], "needs a size"),
    (["create", "-f", "qcow2", "-o", "bogus=1", "x", "1M"], "Invalid parameter 'bogus'"),
    (["create", "-f", "raw", "-o", "cluster_size=4k", "x", "1M"], "Invalid parameter"),
    (["create", "-f", "qcow2", "-o", "cluster_size=3000", "x", "1M"], "cluster size"),
    (["create", "-f", "qcow2", "-o", "compat=0.10,refcount_bits=8", "x", "1M"], "refcount"),
    (["create", "-f", "qcow2", "-b", "nonexist", "-F", "qcow2", "x", "1M"], "nonexist"),
    (["create", "-f", "qcow2", "-b", "nonexist", "x", "1M"], "without backing format"),
    (["create", "-z", "x", "1M"], "Unknown option"),
    (["info", "--bogus", "x"], "Unknown option"),
    (["info", "missing-file"], "missing-file"),
    (["info", "-f", "vmdk", "missing-file"], ""),
    (["check", "missing-file"], "missing-file"),
    (["convert", "-O", "vhdx", "a", "b"], "Unknown file format"),
    (["create", "-f", "raw", "-b", "y", "x", "1Q"], "Invalid image size"),  # size first, as qemu
    (["create", "-f", "qcow2", "-o", "compat=0.10,compression_type=zstd", "x", "1M"],
     "Non-zlib compression type"),
    (["map", "--output=yaml", "x"], "--output must be used with human or json"),
    (["measure", "--output=yaml", "--size", "1M"], "--output must be used with human or json"),
    (["measure", "-O", "qcow2", "-o", "bogus=1", "--size", "1M"], "img: Invalid parameter"),
    (["convert", "missing-file", "out"], "missing-file"),
    (["bogus"], "Command not found"),
    ([], ""),
])
def test_bad_inputs(tmp_path, args, what):
    r = kemu(*args, cwd=tmp_path)
    line = one_error_line(r)
    assert what in line
    assert not os.path.exists(tmp_path / "x") or args[0] == "create"


# ---- info ----

def qemu_images(d):
    """Images made by qemu-img / qemu-io in directory d: name -> path."""
    p = {}
    p["raw"] = str(d / "a.raw")
    assert qemu("create", "-q", "-f", "raw", p["raw"], "10M").returncode == 0
    with open(p["raw"], "r+b") as f:
        f.write(os.urandom(MiB))
    p["v3"] = str(d / "v3.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", p["v3"], "1G").returncode == 0
    qio(p["v3"], "write -P 0x22 1M 3M")
    p["v2"] = str(d / "v2.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4k",
                p["v2"], "33M").returncode == 0
    qio(p["v2"], "write -P 0x33 0 100k")
    p["zstd"] = str(d / "zstd.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", "-o",
                "compression_type=zstd,lazy_refcounts=on,refcount_bits=32",
                p["zstd"], "8M").returncode == 0
    p["compressed"] = str(d / "comp.qcow2")
    assert qemu("convert", "-c", "-O", "qcow2", p["raw"], p["compressed"]).returncode == 0
    p["snap"] = str(d / "snap.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", p["snap"], "16M").returncode == 0
    qio(p["snap"], "write -P 0x44 0 64k")
    assert qemu("snapshot", "-c", "first", p["snap"]).returncode == 0
    assert qemu("snapshot", "-c", "second one", p["snap"]).returncode == 0
    p["chain"] = str(d / "top.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", "-b", "v3.qcow2", "-F", "qcow2",
                p["chain"]).returncode == 0
    p["chain2"] = str(d / "top2.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2",
                p["chain2"], "2G").returncode == 0
    p["rawback"] = str(d / "rb.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", "-b", p["raw"], "-F", "raw",
                p["rawback"]).returncode == 0
    return p


@pytest.fixture(scope="module")
def qimgs(tmp_path_factory):
    return qemu_images(tmp_path_factory.mktemp("qimgs"))


IMG_NAMES = ["raw", "v3", "v2", "zstd", "compressed", "snap", "chain", "chain2", "rawback"]


@pytest.mark.parametrize("name", IMG_NAMES)
def test_info_json_matches_qemu(qimgs, name):
    assert kinfo(qimgs[name]) == qinfo(qimgs[name])


@pytest.mark.parametrize("name", IMG_NAMES)
def test_info_human_matches_qemu(qimgs, name):
    rk, rq = kemu("info", qimgs[name]), qemu("info", qimgs[name])
    assert rk.returncode == rq.returncode == 0
    assert rk.stdout == rq.stdout


@pytest.mark.parametrize("name", ["chain2", "rawback", "v3"])
def test_info_backing_chain(qimgs, name):
    assert kinfo(qimgs[name], "--backing-chain") == qinfo(qimgs[name], "--backing-chain")
    rk = kemu("info", "--backing-chain", qimgs[name])
    rq = qemu("info", "--backing-chain", qimgs[name])
    assert rk.stdout == rq.stdout


def test_info_relative_names(qimgs):
    d = os.path.dirname(qimgs["chain"])
    rk, rq = kemu("info", "top.qcow2", cwd=d), qemu("info", "top.qcow2", cwd=d)
    assert rk.stdout == rq.stdout
    assert kinfo(qimgs["chain"]) == qinfo(qimgs["chain"])


def test_info_format_override(qimgs):
    # a qcow2 file read as raw is a raw image of the file's size
    ki, qi = kinfo(qimgs["v3"], "-f", "raw"), qinfo(qimgs["v3"], "-f", "raw")
    assert ki == qi


def test_snapshot_list(qimgs):
    rk, rq = kemu("snapshot", "-l", qimgs["snap"]), qemu("snapshot", "-l", qimgs["snap"])
    assert rk.returncode == 0
    assert rk.stdout == rq.stdout


def qio_ok(path, *cmds):
    r = run(["qemu-io", "-f", "qcow2", *sum((["-c", c] for c in cmds), []), path])
    return r.returncode == 0 and "fail" not in r.stdout


@pytest.mark.parametrize("opts", ["cluster_size=64k", "cluster_size=4k,compat=0.10",
                                  "refcount_bits=4,compression_type=zstd"])
def test_snapshot_create_apply_delete(tmp_path, opts):
    img = str(tmp_path / "s.qcow2")
    assert qemu("create", "-f", "qcow2", "-o", opts, img, "8M").returncode == 0
    qio(img, "write -P 1 0 3M")
    qio(img, "write -c -P 7 4M 64k")
    r = kemu("snapshot", "-c", "first", img)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert qcheck(img) == 0
    listing = qemu("snapshot", "-l", img).stdout
    assert "first" in listing and listing == kemu("snapshot", "-l", img).stdout
    assert qinfo(img)["snapshots"][0]["name"] == "first"
    # writes after the snapshot copy on write: the snapshot keeps its data
    qio(img, "write -P 2 1M 1M")
    qio(img, "write -P 3 4M 4k")
    assert kemu("snapshot", "-c", "second", img).returncode == 0
    assert qcheck(img) == 0
    assert kemu("snapshot", "-a", "first", img).returncode == 0
    assert qcheck(img) == 0
    assert qio_ok(img, "read -P 1 0 3M", "read -P 7 4M 64k", "read -P 0 3M 1M")
    assert kemu("snapshot", "-a", "2", img).returncode == 0  # by ID
    assert qio_ok(img, "read -P 1 0 1M", "read -P 2 1M 1M", "read -P 3 4M 4k")
    # qemu-img applies kemu-img's snapshot and sees the same data
    assert qemu("snapshot", "-a", "first", img).returncode == 0
    assert qio_ok(img, "read -P 1 0 3M", "read -P 7 4M 64k")
    assert kemu("snapshot", "-d", "first", img).returncode == 0
    assert qcheck(img) == 0
    assert qio_ok(img, "read -P 1 0 3M", "read -P 7 4M 64k")
    assert kemu("snapshot", "-d", "second", img).returncode == 0
    assert qemu("check", img).stdout.startswith("No errors")
    assert qemu("snapshot", "-l", img).stdout == ""
    assert qinfo(img).get("snapshots") is None


def test_snapshot_qemu_made(tmp_path):
    img, ref = str(tmp_path / "q.qcow2"), str(tmp_path / "ref.raw")
    assert qemu("create", "-f", "qcow2", img, "4M").returncode == 0
    qio(img, "write -P 5 0 2M")
    assert qemu("snapshot", "-c", "a", img).returncode == 0
    assert qemu("convert", "-O", "raw", img, ref).returncode == 0
    qio(img, "write -P 6 64k 1M")
    assert qemu("snapshot", "-c", "b", img).returncode == 0
    assert kemu("snapshot", "-a", "a", img).returncode == 0
    assert qcheck(img) == 0
    assert qemu("compare", img, ref).returncode == 0
    assert kemu("snapshot", "-d", "a", img).returncode == 0
    assert qcheck(img) == 0
    assert qemu("compare", img, ref).returncode == 0
    # kemu-img's own writes (convert -n into the active image) leave snapshot b's data alone
    pat = str(tmp_path / "pat.raw")
    with open(pat, "wb") as f:
        f.write(b"\x09" * (4 * MiB))
    assert kemu("convert", "-n", "-O", "qcow2", pat, img).returncode == 0
    assert qcheck(img) == 0 and qio_ok(img, "read -P 9 0 4M")
    assert qemu("snapshot", "-a", "b", img).returncode == 0
    assert qio_ok(img, "read -P 5 0 64k", "read -P 6 64k 1M", "read -P 5 1088k 960k")
    assert qemu("snapshot", "-d", "b", img).returncode == 0
    assert qcheck(img) == 0


def test_snapshot_errors(tmp_path):
    img = str(tmp_path / "e.qcow2")
    assert qemu("create", "-f", "qcow2", "-o", "refcount_bits=1", img, "1M").returncode == 0
    qio(img, "write 0 64k")
    assert "overflow" in one_error_line(kemu("snapshot", "-c", "x", img))
    assert qcheck(img) == 0 and qinfo(img).get("snapshots") is None
    assert "not found" in one_error_line(kemu("snapshot", "-a", "nope", img))
    assert "not found" in one_error_line(kemu("snapshot", "-d", "nope", img))
    assert one_error_line(kemu("snapshot", "-c", "x", "-d", "y", img))
    raw = str(tmp_path / "r.raw")
    open(raw, "wb").close()
    assert one_error_line(kemu("snapshot", "-c", "x", raw))
    assert qcheck(img) == 0


# ---- check ----

def l2_of(path, guest_off=0):
    """(L2 table offset, cluster size) of the L2 table mapping guest_off."""
    with open(path, "rb") as f:
        h = f.read(104)
        cbits = struct.unpack(">I", h[20:24])[0]
        l1_off = struct.unpack(">Q", h[40:48])[0]
        cs = 1 << cbits
        l1_idx = guest_off // (cs * (cs // 8))
        f.seek(l1_off + 8 * l1_idx)
        l1e = struct.unpack(">Q", f.read(8))[0]
    return l1e & 0x00fffffffffffe00, cs


def set_l2_entry(path, idx, value):
    l2, _ = l2_of(path)
    with open(path, "r+b") as f:
        f.seek(l2 + 8 * idx)
        f.write(struct.pack(">Q", value))


def get_l2_entry(path, idx):
    l2, _ = l2_of(path)
    with open(path, "rb") as f:
        f.seek(l2 + 8 * idx)
        return struct.unpack(">Q", f.read(8))[0]


def check_json(tool, path):
    r = tool("check", "--output=json", path)
    return r.returncode, json.loads(r.stdout)


def test_check_clean(qimgs):
    for name in ("v3", "v2", "zstd", "compressed", "snap", "chain"):
        rk = kemu("check", qimgs[name])
        rq = qemu("check", qimgs[name])
        assert rk.returncode == rq.returncode == 0, rk.stderr
        assert rk.stdout == rq.stdout
        assert check_json(kemu, qimgs[name]) == check_json(qemu, qimgs[name])


def test_check_raw_unsupported(qimgs):
    r = kemu("check", qimgs["raw"])
    assert r.returncode == qemu("check", qimgs["raw"]).returncode == 63


def test_check_leak_and_repair(tmp_path):
    img = str(tmp_path / "leak.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", img, "16M").returncode == 0
    qio(img, "write -P 0x5a 0 256k")
    set_l2_entry(img, 1, 0)  # drop the reference to guest cluster 1: its cluster leaks
    assert qcheck(img) == 3
    r = kemu("check", img)
    assert r.returncode == 3, r.stdout + r.stderr
    assert ("1 leaked clusters were found on the image.\n"
            "This means waste of disk space, but no harm to data.\n") in r.stdout
    assert "Leaked cluster" in r.stderr
    rk, jk = check_json(kemu, img)
    rq, jq = check_json(qemu, img)
    jq.pop("fragmented-clusters", None)  # the qcow2 library does not count fragmentation
    assert rk == rq == 3 and jk == jq
    r = kemu("check", "-r", "leaks", img)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "The following inconsistencies were found and repaired" in r.stdout
    assert "    1 leaked clusters\n    0 corruptions" in r.stdout
    assert qcheck(img) == 0
    assert kemu("check", img).returncode == 0


def test_check_corruption(tmp_path):
    img = str(tmp_path / "bad.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", img, "16M").returncode == 0
    qio(img, "write -P 0x5a 0 128k")
    # guest cluster 2 points at the data cluster of guest cluster 0: two references, refcount 1
    set_l2_entry(img, 2, get_l2_entry(img, 0))
    assert qcheck(img) == 2
    r = kemu("check", img)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "errors were found on the image" in r.stdout
    rk, jk = check_json(kemu, img)
    rq, jq = check_json(qemu, img)
    assert rk == rq == 2
    assert jk["corruptions"] == jq["corruptions"]
    # -r leaks does not touch corruptions
    assert kemu("check", "-r", "leaks", img).returncode == 2


def incompat_bits(path):
    with open(path, "rb") as f:
        f.seek(72)
        return struct.unpack(">Q", f.read(8))[0]


def test_lazy_refcounts_dirty_image(tmp_path):
    """qemu-io killed on a lazy_refcounts image leaves it dirty with stale refcounts: kemu-img
    info and check (read-only) say so as qemu-img does; check -r all reports and repairs it with
    the flushed data kept and the bit cleared. kemu-img's own lazy writes (convert) end clean."""
    img = str(tmp_path / "lazy.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", "-o", "cluster_size=4k,lazy_refcounts=on", img,
                "16M").returncode == 0
    r = run(["qemu-io", "-c", "write -P 0x5a 0 64k", "-c", "flush", "-c", "write -P 0x6b 1M 64k",
             "-c", "sigraise 9", img])
    assert r.returncode != 0
    assert incompat_bits(img) & 1
    assert kinfo(img)["dirty-flag"] is True and qinfo(img)["dirty-flag"] is True
    assert qcheck(img) == 2
    r = kemu("check", img)
    assert r.returncode == 2, r.stdout + r.stderr
    r = kemu("check", "-r", "all", img)
    assert r.returncode == 0, r.stdout + r.stderr
    # as qemu-img: what was wrong is reported, then repaired (not silently fixed by the open)
    assert "The following inconsistencies were found and repaired" in r.stdout, r.stdout
    assert re.search(r"^    [1-9]\d* corruptions$", r.stdout, re.M), r.stdout
    assert not incompat_bits(img) & 1
    assert qcheck(img) == 0
    qio(img, "read -P 0x5a 0 64k")
    out = str(tmp_path / "out.qcow2")
    r = kemu("convert", "-O", "qcow2", "-o", "lazy_refcounts=on,cluster_size=4k", img, out)
    assert r.returncode == 0, r.stderr
    assert not incompat_bits(out) & 1
    assert qinfo(out)["format-specific"]["data"]["lazy-refcounts"] is True
    assert qcheck(out) == 0
    assert qemu("compare", img, out).returncode == 0


# ---- convert ----

def test_convert_roundtrip(tmp_path):
    src = str(tmp_path / "src.raw")
    make_mixed_raw(src)
    q = str(tmp_path / "out.qcow2")
    back = str(tmp_path / "back.raw")
    r = kemu("convert", "-f", "raw", "-O", "qcow2", src, q)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    assert qcheck(q) == 0
    assert qemu("compare", "-f", "raw", "-F", "qcow2", src, q).returncode == 0
    assert kemu("compare", src, q).returncode == 0
    # sparse: the qcow2 is about as big as qemu-img's own conversion
    q2 = str(tmp_path / "qemu.qcow2")
    assert qemu("convert", "-O", "qcow2", src, q2).returncode == 0
    assert qinfo(q)["actual-size"] <= qinfo(q2)["actual-size"] + 256 * 1024
    assert kemu("check", q).returncode == 0
    r = kemu("convert", "-O", "raw", q, back)
    assert r.returncode == 0, r.stderr
    assert qemu("compare", "-f", "raw", "-F", "raw", src, back).returncode == 0
    with open(src, "rb") as a, open(back, "rb") as b:
        assert a.read() == b.read()
    assert os.stat(back).st_blocks * 512 <= os.stat(src).st_blocks * 512


def test_convert_sparse_option(tmp_path):
    src = str(tmp_path / "zero.raw")
    with open(src, "wb") as f:
        f.write(bytes(8 * MiB))  # allocated, all zero
    out = str(tmp_path / "o.qcow2")
    assert kemu("convert", "-O", "qcow2", src, out).returncode == 0
    assert qinfo(out)["actual-size"] < 1 * MiB
    full = str(tmp_path / "full.raw")
    assert kemu("convert", "-S", "0", "-O", "raw", src, full).returncode == 0
    assert os.stat(full).st_blocks * 512 >= 8 * MiB
    assert one_error_line(kemu("convert", "-S", "1000", src, full))


def test_convert_qcow2_options_and_chain(qimgs, tmp_path):
    out = str(tmp_path / "c.qcow2")
    r = kemu("convert", "-O", "qcow2", "-o", "cluster_size=4k,compat=0.10", qimgs["chain2"], out)
    assert r.returncode == 0, r.stderr
    qi = qinfo(out)
    assert qi["cluster-size"] == 4096 and qi["format-specific"]["data"]["compat"] == "0.10"
    assert qi["virtual-size"] == 2 << 30 and "backing-filename" not in qi
    assert qcheck(out) == 0
    assert qemu("compare", qimgs["chain2"], out).returncode == 0
    # compressed and snapshot sources, qcow2 -> qcow2
    for name in ("compressed", "snap", "rawback", "v2"):
        out = str(tmp_path / f"{name}.qcow2")
        assert kemu("convert", "-O", "qcow2", qimgs[name], out).returncode == 0
        assert qemu("compare", qimgs[name], out).returncode == 0
        assert qcheck(out) == 0


def test_convert_backing_target(qimgs, tmp_path):
    out = str(tmp_path / "over.qcow2")
    r = kemu("convert", "-O", "qcow2", "-B", qimgs["v3"], qimgs["chain"], out)
    assert r.returncode == 0, r.stderr
    qi = qinfo(out)
    assert qi["backing-filename"] == qimgs["v3"]
    assert qemu("compare", qimgs["chain"], out).returncode == 0
    assert qcheck(out) == 0


def test_convert_concat_and_progress(tmp_path):
    a, b = str(tmp_path / "a.raw"), str(tmp_path / "b.raw")
    with open(a, "wb") as f:
        f.write(os.urandom(3 * MiB))
    with open(b, "wb") as f:
        f.write(os.urandom(MiB + 512))
    out = str(tmp_path / "ab.raw")
    r = kemu("convert", "-p", a, b, out)
    assert r.returncode == 0, r.stderr
    assert "(100.00/100%)" in r.stdout
    with open(out, "rb") as f, open(a, "rb") as fa, open(b, "rb") as fb:
        assert f.read() == fa.read() + fb.read()


def make_compressible(path, mib=24, seed=11):
    """Text, random (incompressible), zero and hole MiBs, and an odd-sized tail."""
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        for i in range(mib):
            kind = rnd.choice(["text", "text", "random", "zero", "hole"])
            if kind == "text":
                f.write(b"".join(b"line %d of block %d\n" % (j, i)
                                 for j in range(MiB // 32))[:MiB].ljust(MiB, b"."))
            elif kind == "random":
                f.write(rnd.randbytes(MiB))
            elif kind == "zero":
                f.write(bytes(MiB))
            else:
                f.seek(MiB, 1)
        f.write(b"tail" * 1000)


@pytest.mark.parametrize("opts", [[], ["-o", "compression_type=zstd"],
                                  ["-o", "cluster_size=4k"], ["-o", "compat=0.10"],
                                  ["-o", "refcount_bits=1"]])
def test_convert_compressed(tmp_path, opts):
    src = str(tmp_path / "s.raw")
    make_compressible(src)
    k, q = str(tmp_path / "k.qcow2"), str(tmp_path / "q.qcow2")
    r = kemu("convert", "-c", "-O", "qcow2", *opts, src, k)
    assert r.returncode == 0, r.stderr
    assert qemu("convert", "-c", "-O", "qcow2", *opts, src, q).returncode == 0
    assert qcheck(k) == 0
    assert qemu("compare", src, k).returncode == 0
    assert kemu("compare", src, k).returncode == 0
    ck = json.loads(qemu("check", "--output=json", k).stdout)
    cq = json.loads(qemu("check", "--output=json", q).stdout)
    # the same clusters end up compressed, and the file is about as small as qemu-img's
    assert ck["compressed-clusters"] == cq["compressed-clusters"] > 0
    assert ck["allocated-clusters"] == cq["allocated-clusters"]
    assert os.path.getsize(k) <= os.path.getsize(q) * 1.05
    if opts == ["-o", "compression_type=zstd"]:
        assert qinfo(k)["format-specific"]["data"]["compression-type"] == "zstd"
    # writes over compressed clusters decompress them; the image stays consistent
    qio(k, "write -P 3 100k 8k")
    assert qcheck(k) == 0


def test_convert_compressed_errors(tmp_path):
    src = str(tmp_path / "s.raw")
    with open(src, "wb") as f:
        f.write(os.urandom(MiB))
    line = one_error_line(kemu("convert", "-c", "-O", "raw", src, str(tmp_path / "c.raw")))
    assert "Compression not supported" in line


def test_convert_from_internal_snapshot(tmp_path):
    """-l ID_OR_NAME and -l snapshot.id=,snapshot.name=: the snapshot's data at the image's
    current size, byte for byte as qemu-img gives it; its errors and exit codes."""
    img = str(tmp_path / "a.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", img, "4M").returncode == 0
    qio(img, "write -P 0x11 0 1M")
    assert qemu("snapshot", "-c", "s1", img).returncode == 0
    qio(img, "write -P 0x22 512k 2M")
    assert qemu("resize", "-q", img, "8M").returncode == 0
    for i, param in enumerate(["s1", "1", "snapshot.name=s1", "snapshot.id=1,snapshot.name=s1"]):
        k, q = str(tmp_path / f"k{i}.qcow2"), str(tmp_path / f"q{i}.raw")
        rk = kemu("convert", "-O", "qcow2", "-l", param, img, k)
        assert rk.returncode == 0, rk.stderr
        assert qemu("convert", "-O", "raw", "-l", param, img, q).returncode == 0
        assert qemu("compare", "-q", k, q).returncode == 0, param
        assert qcheck(k) == 0
    for argv in (["-l", "snapshot.id=2", img], ["-l", "nosuch", img], ["-l", "s1", img, img]):
        out = str(tmp_path / "x.raw")
        rk, rq = kemu("convert", *argv, out), qemu("convert", *argv, out)
        assert rk.returncode == rq.returncode == 1
        assert one_error_line(rk).split(": ", 1)[1] == rq.stderr.strip().split(": ", 1)[1]


# ---- compare ----

def test_compare(tmp_path):
    a, b = str(tmp_path / "a.raw"), str(tmp_path / "b.raw")
    data = bytearray(os.urandom(3 * MiB))
    open(a, "wb").write(data)
    data[2 * MiB + 1000] ^= 1
    open(b, "wb").write(data)
    rk, rq = kemu("compare", a, b), qemu("compare", a, b)
    assert rk.returncode == rq.returncode == 1
    assert rk.stdout == rq.stdout  # "Content mismatch at offset N!"
    rk = kemu("compare", a, a)
    assert rk.returncode == 0 and rk.stdout == "Images are identical.\n"
    # size mismatch with a zero tail: identical with a warning, not in strict mode
    c = str(tmp_path / "c.raw")
    open(c, "wb").write(open(a, "rb").read())
    os.truncate(c, 5 * MiB)
    for extra in ([], ["-s"]):
        rk, rq = kemu("compare", *extra, a, c), qemu("compare", *extra, a, c)
        assert (rk.returncode, rk.stdout) == (rq.returncode, rq.stdout)
    with open(c, "r+b") as f:
        f.seek(4 * MiB + 4096)
        f.write(b"x")
    rk, rq = kemu("compare", a, c), qemu("compare", a, c)
    assert (rk.returncode, rk.stdout) == (rq.returncode, rq.stdout) and rk.returncode == 1
    r = kemu("compare", a, str(tmp_path / "missing"))
    assert r.returncode == 2


# ---- commit, rebase ----

def make_layers(d, tag):
    """base <- mid <- top, each with its own data (top has a compressed cluster, mid zeros)."""
    base, mid, top = (os.path.join(d, f"{tag}-{n}.qcow2") for n in ("base", "mid", "top"))
    assert qemu("create", "-f", "qcow2", base, "4M").returncode == 0
    qio(base, "write -P 1 0 4M")
    assert qemu("create", "-f", "qcow2", "-b", base, "-F", "qcow2", mid).returncode == 0
    qio(mid, "write -P 2 1M 1M")
    qio(mid, "write -z 3M 512k")
    assert qemu("create", "-f", "qcow2", "-b", mid, "-F", "qcow2", top).returncode == 0
    qio(top, "write -P 3 1536k 1M")
    qio(top, "write -c -P 4 0 64k")
    return base, mid, top


@pytest.mark.parametrize("args", [[], ["-d"], ["-b", "BASE"]])
def test_commit(tmp_path, args):
    k = make_layers(str(tmp_path), "k")
    q = make_layers(str(tmp_path), "q")
    rk = kemu("commit", *[k[0] if a == "BASE" else a for a in args], k[2])
    rq = qemu("commit", *[q[0] if a == "BASE" else a for a in args], q[2])
    assert rk.returncode == rq.returncode == 0, rk.stderr
    assert rk.stdout == rq.stdout == "Image committed.\n"
    for kp, qp in zip(k, q):
        assert qcheck(kp) == 0
        r = qemu("compare", "-f", "qcow2", "-F", "qcow2", kp, qp)
        assert r.returncode == 0, (kp, r.stdout)
    # emptied or not, the top image's own clusters are what qemu-img left
    assert qinfo(k[2])["actual-size"] > 0
    mk = json.loads(qemu("map", "--output=json", k[2]).stdout)
    mq = json.loads(qemu("map", "--output=json", q[2]).stdout)
    def layers(m):  # which layer holds each 64 KiB (host offsets may differ)
        return [(e["depth"], e["data"]) for e in m for _ in range(e["length"] // 65536)]
    assert layers(mk) == layers(mq)


def test_commit_errors(tmp_path):
    img = str(tmp_path / "solo.qcow2")
    assert qemu("create", "-f", "qcow2", img, "1M").returncode == 0
    assert "backing file" in one_error_line(kemu("commit", img))
    k = make_layers(str(tmp_path), "k")
    assert "backing chain" in one_error_line(kemu("commit", "-b", img, k[2]))
    assert qcheck(k[2]) == 0


@pytest.mark.parametrize("mode", ["safe", "unsafe", "remove"])
def test_rebase(tmp_path, mode):
    k = make_layers(str(tmp_path), "k")
    q = make_layers(str(tmp_path), "q")
    if mode == "safe":
        rk = kemu("rebase", "-b", os.path.basename(k[0]), "-F", "qcow2", k[2])
        rq = qemu("rebase", "-b", os.path.basename(q[0]), "-F", "qcow2", q[2])
    elif mode == "unsafe":
        rk = kemu("rebase", "-u", "-b", os.path.basename(k[0]), "-F", "qcow2", k[2])
        rq = qemu("rebase", "-u", "-b", os.path.basename(q[0]), "-F", "qcow2", q[2])
    else:
        rk, rq = kemu("rebase", "-b", "", k[2]), qemu("rebase", "-b", "", q[2])
    assert rk.returncode == rq.returncode == 0, rk.stderr
    assert qcheck(k[2]) == 0
    ik, iq = qinfo(k[2]), qinfo(q[2])
    assert (ik.get("backing-filename") or "").replace("k-", "q-") == \
        (iq.get("backing-filename") or "")
    assert ik.get("backing-filename-format") == iq.get("backing-filename-format")
    assert qemu("compare", k[2], q[2]).returncode == 0
    if mode != "unsafe":  # the guest sees the same disk as before
        ref = make_layers(str(tmp_path), "ref")[2]
        assert qemu("compare", k[2], ref).returncode == 0
    # other header extensions survive the header rewrite
    assert ik["format-specific"]["data"]["compat"] == "1.1"


def test_rebase_errors(tmp_path):
    k = make_layers(str(tmp_path), "k")
    assert one_error_line(kemu("rebase", k[2]))
    assert one_error_line(kemu("rebase", "-b", "missing.qcow2", k[2]))
    assert qinfo(k[2])["backing-filename"] == k[1]  # unchanged
    assert qcheck(k[2]) == 0


# ---- resize, measure ----

def test_resize_raw(tmp_path):
    k, q = str(tmp_path / "k.raw"), str(tmp_path / "q.raw")
    for p in (k, q):
        open(p, "wb").write(os.urandom(MiB))
    for args in (["+1M"], ["3M"], ["-512k"], ["1M"]):
        rk = kemu("resize", "-f", "raw", k, *args)
        rq = qemu("resize", "-f", "raw", q, *args)
        assert rk.returncode == rq.returncode, (args, rk.stderr, rq.stderr)
        assert os.path.getsize(k) == os.path.getsize(q)
    assert one_error_line(kemu("resize", "-f", "raw", k, "1M"))  # shrink without --shrink
    r = kemu("resize", "-f", "raw", "--shrink", k, "1M")
    assert r.returncode == 0 and r.stdout == "Image resized.\n"
    assert os.path.getsize(k) == MiB


@pytest.mark.parametrize("opts", ["cluster_size=64k", "cluster_size=4k,compat=0.10"])
def test_resize_qcow2(tmp_path, opts):
    k, q = str(tmp_path / "k.qcow2"), str(tmp_path / "q.qcow2")
    for p in (k, q):
        assert qemu("create", "-f", "qcow2", "-o", opts, p, "3M").returncode == 0
        qio(p, "write -P 1 0 3M")
    # shrinking needs --shrink, as in qemu-img; nothing changes without it
    assert "--shrink" in one_error_line(kemu("resize", k, "1M"))
    assert qinfo(k)["virtual-size"] == 3 * MiB
    for args in (["+5G"], ["--shrink", "1M"], ["--shrink", "768k"], ["2M"], ["+1M"]):
        rk, rq = kemu("resize", k, *args), qemu("resize", q, *args)
        assert rk.returncode == rq.returncode == 0, (args, rk.stderr)
        assert rk.stdout == "Image resized.\n"
        assert qinfo(k)["virtual-size"] == qinfo(q)["virtual-size"]
        assert qcheck(k) == 0
    # kept data survives, everything past the old end reads zeros
    assert qio_ok(k, "read -P 1 0 768k", "read -P 0 768k 2304k")
    assert kemu("resize", k, "1T").returncode == 0  # the L1 table moves
    qio(k, "write -P 2 1000G 64k")
    assert qcheck(k) == 0 and qio_ok(k, "read -P 1 0 768k", "read -P 2 1000G 64k")


def test_resize_qcow2_backing(tmp_path):
    base, top = str(tmp_path / "b.qcow2"), str(tmp_path / "t.qcow2")
    assert qemu("create", "-f", "qcow2", base, "4M").returncode == 0
    qio(base, "write -P 7 0 4M")
    assert qemu("create", "-f", "qcow2", "-b", base, "-F", "qcow2", top, "1M").returncode == 0
    # growing over a longer backing file must not expose its data
    assert kemu("resize", top, "4M").returncode == 0
    assert qcheck(top) == 0 and qio_ok(top, "read -P 7 0 1M", "read -P 0 1M 3M")
    # snapshots keep their data across a shrink
    assert qemu("snapshot", "-c", "s", top).returncode == 0
    assert kemu("resize", "--shrink", top, "512k").returncode == 0
    assert qcheck(top) == 0
    assert qemu("snapshot", "-a", "s", top).returncode == 0
    assert qio_ok(top, "read -P 7 0 1M", "read -P 0 1M 3M")


def make_chain(d):
    """ov.qcow2 over base.qcow2 (data, compressed, zero), ovr.qcow2 over a raw file, pre.qcow2
    preallocated."""
    base, ov = os.path.join(d, "base.qcow2"), os.path.join(d, "ov.qcow2")
    assert qemu("create", "-f", "qcow2", base, "4M").returncode == 0
    qio(base, "write -P 1 0 1M")
    qio(base, "write -c -P 2 2M 64k")
    assert qemu("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", ov).returncode == 0
    qio(ov, "write -P 3 512k 128k")
    qio(ov, "write -z 3M 64k")
    qio(ov, "write -P 4 3200k 4k")
    rb, ovr = os.path.join(d, "rb.raw"), os.path.join(d, "ovr.qcow2")
    with open(rb, "wb") as f:
        f.write(b"\x01" * (128 * 1024))
        f.truncate(MiB)
    assert qemu("create", "-f", "qcow2", "-b", "rb.raw", "-F", "raw", ovr).returncode == 0
    pre = os.path.join(d, "pre.qcow2")
    assert qemu("create", "-f", "qcow2", "-o", "preallocation=metadata", pre, "1M").returncode == 0
    qio(pre, "write -z 0 64k")
    qio(pre, "write -P 5 128k 64k")
    return [ov, base, ovr, pre]


def test_map_qcow2(tmp_path):
    for img in make_chain(str(tmp_path)):
        for out in ("human", "json"):
            rk = kemu("map", "--output=" + out, os.path.basename(img), cwd=str(tmp_path))
            rq = qemu("map", "--output=" + out, os.path.basename(img), cwd=str(tmp_path))
            # (human output stops with an error at compressed clusters, in both)
            assert rk.returncode == rq.returncode, rk.stderr
            assert rk.stdout == rq.stdout, (img, out)


@pytest.mark.parametrize("args", [
    ["-O", "qcow2", "--size", "1G"],
    ["-O", "qcow2", "--size", "100M", "-o", "cluster_size=4k"],
    ["-O", "qcow2", "--size", "10T", "-o", "refcount_bits=1"],
    ["-O", "raw", "--size", "1G"],
    ["--output=json", "-O", "qcow2", "--size", "3G"],
])
def test_measure_size(args):
    rk, rq = kemu("measure", *args), qemu("measure", *args)
    assert rk.returncode == rq.returncode == 0
    assert rk.stdout == rq.stdout


def test_measure_file(tmp_path):
    src = str(tmp_path / "src.raw")
    make_mixed_raw(src)
    q = str(tmp_path / "s.qcow2")
    assert qemu("convert", "-O", "qcow2", src, q).returncode == 0
    for path in (src, q):
        for fmt in ("raw", "qcow2"):
            rk, rq = kemu("measure", "-O", fmt, path), qemu("measure", "-O", fmt, path)
            assert rk.stdout == rq.stdout, (path, fmt)


def test_measure_internal_snapshot(tmp_path):
    """measure -l measures the snapshot's clusters (the figures differ from the image's own, so
    an ignored -l fails), as qemu-img does; data clusters count by allocation, zeros or not."""
    img = str(tmp_path / "a.qcow2")
    assert qemu("create", "-q", "-f", "qcow2", img, "4M").returncode == 0
    qio(img, "write -P 0x11 0 1M")
    qio(img, "write -P 0 1M 512k")
    assert qemu("snapshot", "-c", "s1", img).returncode == 0
    qio(img, "write -P 0x22 512k 3M")
    assert qemu("resize", "-q", img, "8M").returncode == 0
    plain = kemu("measure", "-O", "qcow2", img)
    assert plain.returncode == 0 and plain.stdout == qemu("measure", "-O", "qcow2", img).stdout
    for param in ["s1", "1", "snapshot.name=s1", "snapshot.id=1,snapshot.name=s1"]:
        for args in (["-O", "qcow2"], ["-O", "qcow2", "-o", "cluster_size=4k"], ["-O", "raw"],
                     ["--output=json", "-O", "qcow2"]):
            argv = ["measure", *args, "-l", param, img]
            rk, rq = kemu(*argv), qemu(*argv)
            assert rk.returncode == rq.returncode == 0, rk.stderr
            assert rk.stdout == rq.stdout, argv
        assert kemu("measure", "-O", "qcow2", "-l", param, img).stdout != plain.stdout
    raw = str(tmp_path / "r.raw")
    open(raw, "wb").truncate(MiB)
    for argv in (["-l", "snapshot.id=2", img], ["-l", "nosuch", img], ["-l", "s1", raw],
                 ["-l", "s1", "--size", "1M"], ["-l", "s1", img, img]):
        rk, rq = kemu("measure", *argv), qemu("measure", *argv)
        assert rk.returncode == rq.returncode == 1, argv
        assert one_error_line(rk).split(": ", 1)[1] == rq.stderr.strip().split(": ", 1)[1]


def test_map_raw_json(tmp_path):
    src = str(tmp_path / "m.raw")
    make_mixed_raw(src, size=16 * MiB)
    rk = kemu("map", "--output=json", src)
    rq = qemu("map", "--output=json", "-f", "raw", src)
    assert rk.returncode == 0
    assert json.loads(rk.stdout) == json.loads(rq.stdout)
