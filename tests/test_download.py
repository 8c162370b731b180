"""The download path, end to end, against an HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from harness.data import DataFiles, Source, fetch, unpack
from harness.errors import HarnessError
from harness.builtin import cola, mrpc


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        outer = self

        class Handler(_Quiet):
            def do_GET(self):
                outer.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    """``serve(folder)``: an HTTP server on an ephemeral port of 127.0.0.1 serving ``folder``."""
    servers = []

    def start(root: Path) -> Server:
        server = Server(root).__enter__()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.__exit__()


@pytest.fixture
def online(monkeypatch, tmp_path):
    """No data directory, an empty cache, downloads allowed (from a mirror the test sets)."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("HARNESS_DATA_DIR", str(empty))
    monkeypatch.delenv("HARNESS_OFFLINE")
    return tmp_path / "cache"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_cola_downloads_verifies_unpacks_and_caches(serve, online, monkeypatch, data_dir, cli, write_suite, tmp_path):
    server = serve(data_dir)  # serves cola/cola_public_1.1.zip as <mirror>/cola/cola_public_1.1.zip
    monkeypatch.setenv("HARNESS_DATA_MIRROR", server.url)
    dataset = cola.CoLA(cola.CoLA.Options(), DataFiles("cola"))
    dataset.check()
    assert server.requests == ["/cola/cola_public_1.1.zip"]
    train = online / "cola" / "raw" / "in_domain_train.tsv"
    # byte for byte the file SOURCE.md records
    assert _sha(train) == "f320a10f92d3bce6b29152fde322a362eac39238e50d8de0c8815457fdf4fc12"
    assert _leftovers(online) == ["cola"]  # the temporary download folder is gone
    assert len(dataset.load("train")) == 8551

    # a run uses the cache; nothing is downloaded twice
    suite = write_suite("name: dl\ndefaults: {dataset: cola}\n")
    from helpers import tiny_sets

    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *tiny_sets())
    assert code == 0, err
    assert server.requests == ["/cola/cola_public_1.1.zip"]


def test_mrpc_downloads_its_three_files(serve, online, monkeypatch, data_dir):
    server = serve(data_dir)
    monkeypatch.setenv("HARNESS_DATA_MIRROR", server.url)
    dataset = mrpc.MRPC(mrpc.MRPC.Options(), DataFiles("mrpc"))
    assert len(dataset.load("train")) == 3668
    assert len(dataset.load("test")) == 1725
    assert sorted(server.requests) == ["/mrpc/dev_ids.tsv", "/mrpc/msr_paraphrase_test.txt", "/mrpc/msr_paraphrase_train.txt"]
    assert _leftovers(online) == ["mrpc"]


def test_corrupted_download_is_refused_and_leaves_nothing(serve, online, monkeypatch, data_dir, tmp_path):
    mirror = tmp_path / "mirror" / "cola"
    mirror.mkdir(parents=True)
    blob = bytearray((data_dir / "cola" / "cola_public_1.1.zip").read_bytes())
    blob[1000] ^= 0xFF  # one flipped byte
    (mirror / "cola_public_1.1.zip").write_bytes(bytes(blob))
    server = serve(tmp_path / "mirror")
    monkeypatch.setenv("HARNESS_DATA_MIRROR", server.url)
    with pytest.raises(HarnessError) as exc:
        DataFiles("cola").path("raw/in_domain_train.tsv", cola.SOURCE)
    msg = str(exc.value)
    assert "sha256 mismatch" in msg and cola.SOURCE.sha256 in msg and "nothing was cached" in msg
    assert "raw/in_domain_train.tsv" in msg and "\n" not in msg
    assert _leftovers(online) == []  # no dataset folder, no temporary folder


def test_unreachable_server_fails_fast_with_a_clear_error(online, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HARNESS_DATA_MIRROR", f"http://127.0.0.1:{port}")
    with pytest.raises(HarnessError) as exc:
        DataFiles("cola").path("raw/in_domain_train.tsv", cola.SOURCE)
    msg = str(exc.value)
    # fails fast: on the refused connection, not by waiting out the download timeout
    assert "no answer within" not in msg and "no data within" not in msg
    assert "cannot connect" in msg
    assert "missing raw/in_domain_train.tsv" in msg  # the file
    assert "put it at" in msg and "no-data/cola/raw/in_domain_train.tsv" in msg  # where to put it
    assert cola.SOURCE.url in msg  # where it comes from
    assert _leftovers(online) == []


def test_a_server_that_never_answers_times_out(online, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never sends a byte
    try:
        monkeypatch.setenv("HARNESS_DATA_MIRROR", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setenv("HARNESS_DOWNLOAD_TIMEOUT", "0.5")
        with pytest.raises(HarnessError, match="within 0.5 s") as exc:
            DataFiles("cola").path("raw/in_domain_train.tsv", cola.SOURCE)
        # the error names the timeout that stopped the wait, for the file it asked for
        assert re.search(r"/cola/cola_public_1\.1\.zip: no (answer|data) within 0\.5 s", str(exc.value)), exc.value
        # the client did reach the server and ask: it gave up waiting for an answer
        listener.settimeout(30)
        conn, _ = listener.accept()
        with conn:
            assert conn.recv(4096).startswith(b"GET /cola/cola_public_1.1.zip ")
    finally:
        listener.close()
    assert _leftovers(online) == []


def test_http_error_is_named(serve, online, monkeypatch, tmp_path):
    (tmp_path / "empty-mirror").mkdir()
    monkeypatch.setenv("HARNESS_DATA_MIRROR", serve(tmp_path / "empty-mirror").url)
    with pytest.raises(HarnessError, match="HTTP 404"):
        DataFiles("cola").path("raw/in_domain_train.tsv", cola.SOURCE)


def test_offline_error_names_the_file_where_to_put_it_and_where_it_comes_from(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    with pytest.raises(HarnessError) as exc:
        DataFiles("cola").path("raw/in_domain_train.tsv", cola.SOURCE)
    msg = str(exc.value)
    assert f"put it at {tmp_path}/cola/raw/in_domain_train.tsv" in msg
    assert "https://nyu-mll.github.io/CoLA/cola_public_1.1.zip" in msg and "cola_public/" in msg


def test_a_tar_archive_with_a_prefix_and_an_include_list(serve, online, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror" / "toy"
    mirror.mkdir(parents=True)
    archive = mirror / "toy.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in {"toy-1.0/a/x.txt": b"x", "toy-1.0/b/y.txt": b"y", "toy-1.0/README": b"r"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    source = Source(url="https://example.org/toy.tar.gz", sha256=_sha(archive), strip_prefix="toy-1.0/", include=("a/",))
    monkeypatch.setenv("HARNESS_DATA_MIRROR", serve(tmp_path / "mirror").url)
    found = DataFiles("toy").path("a/x.txt", source)
    assert found == online / "toy" / "a" / "x.txt" and found.read_bytes() == b"x"
    assert not (online / "toy" / "b").exists() and not (online / "toy" / "README").exists()


# ------------------------------------------------------------------ unpacking safely


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/x", "..\\x"])
def test_zip_members_that_climb_out_are_refused(tmp_path, bad):
    archive = _zip(tmp_path / "evil.zip", {"ok.txt": b"fine", bad: b"evil"})
    dest = tmp_path / "out" / "inner"
    with pytest.raises(HarnessError, match="refusing to unpack") as exc:
        unpack(archive, dest)
    assert str(archive) in str(exc.value)
    assert not (tmp_path / "out" / "x").exists() and not (tmp_path / "x").exists()
    assert not (dest / "ok.txt").exists()  # checked before anything is written


def test_a_download_with_a_climbing_member_leaves_nothing(serve, online, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror" / "toy"
    mirror.mkdir(parents=True)
    archive = _zip(mirror / "toy.zip", {"data.txt": b"x", "../x": b"evil"})
    monkeypatch.setenv("HARNESS_DATA_MIRROR", serve(tmp_path / "mirror").url)
    with pytest.raises(HarnessError, match="points outside"):
        fetch(Source(url="https://example.org/toy.zip", sha256=_sha(archive)), online, "toy")
    assert _leftovers(online) == []


@pytest.mark.parametrize(
    "kind,target",
    [(tarfile.SYMTYPE, "../../outside"), (tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "../outside")],
)
def test_tar_links_pointing_outside_are_refused(tmp_path, kind, target):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("dir/link")
        info.type, info.linkname = kind, target
        tf.addfile(info)
    with pytest.raises(HarnessError, match="points outside"):
        unpack(archive, tmp_path / "out")


def test_tar_member_with_dotdot_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("../x")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(HarnessError, match="points outside"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "x").exists()


def test_a_link_inside_the_archive_is_fine(tmp_path):
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tf:
        data = tarfile.TarInfo("dir/file.txt")
        data.size = 2
        tf.addfile(data, io.BytesIO(b"ok"))
        link = tarfile.TarInfo("dir/sub/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../file.txt"
        tf.addfile(link)
    unpack(archive, tmp_path / "out")
    assert (tmp_path / "out" / "dir" / "file.txt").read_bytes() == b"ok"
