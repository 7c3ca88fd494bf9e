"""data_prep: LibreOffice help bitext + CLIR, gettext .mo, cleaning, downloader conversions.

Everything runs on tiny fakes built here (no network, no real packages).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep import clean, download, gettext_mo, libreoffice_help as lo
from optical.errors import OpticalError

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ fake help trees

SWITCH = ('<span id="swlnsys_{n}" class="switchinline"><span hidden="true" id="MAC_{n}" '
          'class="MAC"><span class="emph">{mac}</span></span><span hidden="true" '
          'id="default_{n}"><span class="emph">{default}</span></span></span>')

# page key -> title, [(tag, id, text)], linked page keys; English and Vietnamese.
EN = {
    "text/swriter/a.html": ("Inserting Tables", [
        ("h1", "hd_a1", "Inserting Tables"),
        ("p", "par_a2", "There are several ways to create a table &amp; more."),
        ("p", "par_a3", "Choose " + SWITCH.format(n=1, mac="LibreOffice - Preferences",
                                                  default="Tools - Options") + " - Writer."),
        ("p", "par_a4", "LibreOffice macros are grouped in module files."),
        ("p", "par_a5", "Only the English page has this paragraph."),
        ("p", "par_rel", "Related Topics"),
    ], ["text/swriter/b.html", "text/scalc/c.html"]),
    "text/swriter/b.html": ("Deleting Tables", [
        ("h1", "hd_b1", "Deleting Tables"),
        ("p", "par_b2", "Select the table and press Delete to remove it."),
        ("p", "par_rel", "Related Topics"),
    ], ["text/swriter/a.html"]),
    "text/scalc/c.html": ("Sorting Data", [
        ("h1", "hd_c1", "Sorting Data"),
        ("p", "par_c2", "Sorting arranges the rows of a range in a new order."),
        ("p", "par_rel", "Related Topics"),
    ], ["text/scalc/d.html"]),
    "text/scalc/d.html": ("Printing Sheets", [
        ("h1", "hd_d1", "Printing Sheets"),
        ("p", "par_d2", "You can print a sheet in landscape or portrait format."),
        ("p", "par_rel", "Related Topics"),
    ], ["text/swriter/a.html"]),
    "text/shared/e.html": ("Only in English", [
        ("h1", "hd_e1", "Only in English"),
        ("p", "par_e2", "This page was never translated."),
    ], []),
}
VI = {
    "text/swriter/a.html": ("Chèn bảng", [
        ("h1", "hd_a1", "Chèn bảng"),
        ("p", "par_a2", "Có vài cách khác nhau để tạo một bảng &amp; hơn nữa."),
        ("p", "par_a3", "Chọn " + SWITCH.format(n=1, mac="LibreOffice - Tùy thích",
                                                default="Công cụ - Tùy chọn") + " - Writer."),
        ("p", "par_a4", "LibreOffice macros are grouped in module files."),  # untranslated
        ("p", "par_rel", "Chủ đề liên quan"),
    ], ["text/swriter/b.html", "text/scalc/c.html"]),
    "text/swriter/b.html": ("Xoá bảng", [
        ("h1", "hd_b1", "Xoá bảng"),
        ("p", "par_b2", "Chọn bảng rồi nhấn Delete để xoá nó."),
        ("p", "par_rel", "Chủ đề liên quan"),
    ], ["text/swriter/a.html"]),
    "text/scalc/c.html": ("Sắp xếp dữ liệu", [
        ("h1", "hd_c1", "Sắp xếp dữ liệu"),
        ("p", "par_c2", "Sắp xếp đặt các hàng của một phạm vi theo thứ tự mới."),
        ("p", "par_rel", "Chủ đề liên quan"),
    ], ["text/scalc/d.html"]),
    "text/scalc/d.html": ("In trang tính", [
        ("h1", "hd_d1", "In trang tính"),
        ("p", "par_d2", "Bạn có thể in trang tính theo hướng ngang hoặc dọc."),
        ("p", "par_rel", "Chủ đề liên quan"),
    ], ["text/swriter/a.html"]),
}


def page_html(lang: str, title: str, units, links) -> str:
    """A page shaped like the real ones: chrome around a DisplayArea of id'd units."""
    body = "\n".join(f'<{tag} id="{uid}" class="paragraph" dir="auto">{text}</{tag}>'
                     for tag, uid, text in units)
    related = "\n".join(f'<div class="embedded"><p class="embedded"><a target="_top" '
                        f'href="{lang}/text/{k[len("text/"):]}#bm_1">link</a></p></div>'
                        for k in links)
    return f"""<!DOCTYPE html>
<html lang="{lang}"><head><base href="../../../"><meta charset="utf-8">
<title>{title}</title><script>var x = "<p id='par_fake'>no</p>";</script></head>
<body><header id="TopLeftHeader"><a href="{lang}/text/shared/05/new_help.html">Help</a>
<p dir="auto">LibreOffice Help</p></header>
<aside class="leftside"><div id="Index"><nav class="index"></nav></div></aside>
<div id="DisplayArea">
{body}
<br/>
{related}
</div>
<footer><div id="DEBUG"><p id="bm_module" dir="auto"></p>
<p dir="auto">This page is: <a href="https://example.org/text/x.xhp">x</a></p></div></footer>
</body></html>
"""


def make_tree(root: Path, lang: str, pages: dict) -> Path:
    """Write pages like a package unpacked with ``dpkg-deb -x`` into ``root``."""
    help_dir = root / "usr/share/libreoffice/help" / lang
    for key, (title, units, links) in pages.items():
        path = help_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page_html(lang, title, units, links), encoding="utf-8")
    return root


def make_deb(path: Path, tree: Path) -> Path:
    """A minimal real .deb: ar archive with debian-binary, control and data.tar.xz."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        tar.add(tree, arcname=".")
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", b""),
               ("data.tar.xz", data.getvalue())]
    out = bytearray(b"!<arch>\n")
    for name, payload in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n".encode()
        out += payload + (b"\n" if len(payload) % 2 else b"")
    path.write_bytes(bytes(out))
    return path


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("lo")
    return make_tree(base / "en", "en-US", EN), make_tree(base / "vi", "vi", VI)


@pytest.fixture(scope="module")
def prepared(trees, tmp_path_factory):
    en_root, vi_root = trees
    out = tmp_path_factory.mktemp("out")
    stats = lo.prepare(lo.read_pages(en_root, "en-US"), lo.read_pages(vi_root, "vi"), out,
                       test_fraction=0.75, dev_fraction=0.0, seed=3)
    return out, stats


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tsv_pairs(path: Path) -> list[tuple[str, str]]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(len(r) == 2 for r in rows)
    return [tuple(r) for r in rows]


# ------------------------------------------------------------------ LibreOffice help


def test_parse_page_units_switch_links_and_chrome():
    title, units, links = EN["text/swriter/a.html"]
    page = lo.parse_page(page_html("en-US", title, units, links))
    assert page.title == "Inserting Tables"
    # Entities decoded, switchinline keeps only its default case, chrome/footer ignored.
    assert page.units["par_a2"] == "There are several ways to create a table & more."
    assert page.units["par_a3"] == "Choose Tools - Options - Writer."
    assert "bm_module" not in page.units and "par_fake" not in page.units
    assert page.links == {"text/swriter/b.html", "text/scalc/c.html"}  # header link ignored


def test_parse_page_repeated_and_conflicting_ids():
    html = ('<title>T</title><p id="x">Example:</p><p id="x">Example:</p>'
            '<p id="y">one</p><p id="y">two</p>')
    page = lo.parse_page(html)
    assert page.units == {"x": "Example:", "y": "one"}
    assert page.duplicate_ids == 1


def test_normalize_link():
    assert lo.normalize_link("vi/text/scalc/01/a.html#bm_1") == "text/scalc/01/a.html"
    assert lo.normalize_link("../../text/a.html") == "text/a.html"
    assert lo.normalize_link("https://x.org/text/a.html") is None
    assert lo.normalize_link("media/files/x.ods") is None


def test_pairing_and_drop_reasons(prepared):
    out, stats = prepared
    pairs = set(tsv_pairs(out / "train.tsv")) | set(tsv_pairs(out / "test.tsv"))
    assert ("Choose Tools - Options - Writer.", "Chọn Công cụ - Tùy chọn - Writer.") in pairs
    assert ("Inserting Tables", "Chèn bảng") in pairs
    english = {e for e, _ in pairs}
    assert "Only the English page has this paragraph." not in english  # id missing in vi
    assert "LibreOffice macros are grouped in module files." not in english  # untranslated
    assert "This page was never translated." not in english  # page missing in vi
    assert [e for e, _ in pairs].count("Related Topics") == 1  # repeated on every page
    d = stats["dropped"]
    assert d["missing_page"] == 2 and d["missing_in_target"] == 1
    assert d["untranslated"] == 1 and d["duplicate"] == 3
    assert stats["pages"] == {"english": 5, "other": 4, "paired": 4, "missing_in_target": 1,
                              "only_in_target": 0, "test": 3, "dev": 0, "train": 1}
    assert stats["pairs"]["train"] + stats["pairs"]["test"] == len(pairs)
    assert json.loads((out / "stats.json").read_text())["pairs"] == stats["pairs"]


def test_split_is_by_page(prepared):
    out, _ = prepared
    page_of = {text: key for key, (_, units, _) in EN.items() for _, _, text in units}
    page_of["There are several ways to create a table & more."] = "text/swriter/a.html"
    page_of["Choose Tools - Options - Writer."] = "text/swriter/a.html"
    page_of.pop("Related Topics")  # shared by all pages, kept once

    def pages(split):
        return {page_of[e] for e, _ in tsv_pairs(out / f"{split}.tsv") if e in page_of}

    assert pages("train") and pages("test")
    assert not pages("train") & pages("test")
    assert tsv_pairs(out / "dev.tsv") == []


def test_split_pages_seeded_and_disjoint():
    keys = [f"text/p{i}.html" for i in range(100)]
    a = lo.split_pages(keys, 0.1, 0.05, seed=1)
    assert a == lo.split_pages(keys, 0.1, 0.05, seed=1)
    assert a != lo.split_pages(keys, 0.1, 0.05, seed=2)
    assert (len(a["test"]), len(a["dev"]), len(a["train"])) == (10, 5, 85)
    assert set(a["test"]) | set(a["dev"]) | set(a["train"]) == set(keys)
    with pytest.raises(OpticalError):
        lo.split_pages(keys, 0.7, 0.5, seed=1)


def test_clir_beir_files(prepared):
    out, stats = prepared
    clir = out / "clir"
    queries = read_jsonl(clir / "queries.jsonl")
    corpus = read_jsonl(clir / "corpus.jsonl")
    corpus_en = read_jsonl(clir / "corpus_en.jsonl")
    assert [d["_id"] for d in corpus] == [d["_id"] for d in corpus_en]
    assert len(corpus) == 3 and set(corpus[0]) == {"_id", "title", "text"}
    assert set(queries[0]) == {"_id", "text"}
    en_titles = {lo.page_id(k): t for k, (t, _, _) in EN.items()}
    vi_titles = {lo.page_id(k): t for k, (t, _, _) in VI.items()}
    # Query ids are "q:" + page id, never a document id (BEIR drops hits with qid == docid).
    assert all(q["_id"].startswith("q:") for q in queries)
    assert all(q["text"] == en_titles[q["_id"][2:]] for q in queries)
    assert not {q["_id"] for q in queries} & {d["_id"] for d in corpus}
    assert all(d["title"] == vi_titles[d["_id"]] for d in corpus)
    assert "Chủ đề liên quan" in corpus[0]["text"] and "Related Topics" in corpus_en[0]["text"]

    lines = (clir / "qrels" / "test.tsv").read_text().splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    qrels = {}
    for line in lines[1:]:
        q, d, s = line.split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    test_ids = {d["_id"] for d in corpus}
    for key, (_, _, links) in EN.items():
        doc = lo.page_id(key)
        if doc not in test_ids:
            continue
        expected = {doc: 2, **{lo.page_id(k): 1 for k in links if lo.page_id(k) in test_ids}}
        assert qrels[lo.query_id(key)] == expected
    assert set(qrels) == {q["_id"] for q in queries}
    assert stats["clir"]["qrels_score_1"] >= 1
    # The same judgements in TREC format: "qid 0 docid grade".
    trec = [line.split(" ") for line in (clir / "qrels" / "test.trec").read_text().splitlines()]
    assert all(len(row) == 4 and row[1] == "0" for row in trec)
    assert {(q, d, int(s)) for q, _, d, s in trec} == {
        (q, d, s) for q, docs in qrels.items() for d, s in docs.items()}
    assert len(trec) == len(lines) - 1


def test_deb_input_and_cli(trees, tmp_path):
    en_root, vi_root = trees
    en_deb = make_deb(tmp_path / "libreoffice-help-en-us_1_all.deb", en_root)
    vi_deb = make_deb(tmp_path / "libreoffice-help-vi_1_all.deb", vi_root)
    assert lo.read_deb_pages(vi_deb, "vi") == lo.read_pages(vi_root, "vi")
    with pytest.raises(OpticalError, match="languages found: vi"):
        lo.read_deb_pages(vi_deb, "km")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "data_prep.libreoffice_help", "--lang", "vi",
                           "--en", str(en_deb), "--other", str(vi_deb), "--out", str(out),
                           "--test-fraction", "0.5"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "clir" / "qrels" / "test.tsv").is_file()
    assert json.loads((out / "stats.json").read_text())["pages"]["test"] == 2


def test_apt_download_uses_cache_and_reports_missing_apt(tmp_path, monkeypatch):
    (tmp_path / "libreoffice-help-en-us_1_all.deb").write_bytes(b"x")
    (tmp_path / "libreoffice-help-vi_1_all.deb").write_bytes(b"x")
    en, vi = lo.apt_download("vi", tmp_path)  # both cached: no apt-get call
    assert en.name.startswith("libreoffice-help-en-us_") and vi.name.startswith("libreoffice-help-vi_")
    monkeypatch.setattr(lo.shutil, "which", lambda name: None)
    with pytest.raises(OpticalError, match="apt-get not found"):
        lo.apt_download("km", tmp_path)


@pytest.mark.parametrize("make_bad", ["missing", "not_a_deb", "no_lang"])
def test_bad_inputs_give_one_line_errors(tmp_path, make_bad, capsys):
    if make_bad == "missing":
        source = tmp_path / "nope"
    elif make_bad == "not_a_deb":
        source = tmp_path / "fake.deb"
        source.write_text("this is not a deb\n")
    else:
        source = make_tree(tmp_path / "km", "km", {"text/a.html": ("A", [], [])})
    with pytest.raises(OpticalError) as err:
        lo.read_pages(source, "vi")
    assert "\n" not in str(err.value) and str(source) in str(err.value)
    assert lo.main(["--lang", "vi", "--other", str(source), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_every_module_has_help(capsys):
    for module in (lo, gettext_mo, clean, download):
        with pytest.raises(SystemExit) as done:
            module.main(["--help"])
        assert done.value.code == 0
        assert "usage:" in capsys.readouterr().out


# ------------------------------------------------------------------ gettext .mo


def write_mo(path: Path, messages: dict[bytes, bytes]) -> Path:
    """Write a little-endian GNU .mo file (sorted originals, no hash table)."""
    keys = sorted(messages)
    n = len(keys)
    originals_at, translations_at = 28, 28 + 8 * n
    strings_at = translations_at + 8 * n
    blob, o_table, t_table = b"", [], []
    for table, items in ((o_table, keys), (t_table, [messages[k] for k in keys])):
        for s in items:
            table.append((len(s), strings_at + len(blob)))
            blob += s + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, originals_at, translations_at, 0, 0)
    body = b"".join(struct.pack("<2I", *e) for e in o_table + t_table)
    path.write_bytes(head + body + blob)
    return path


MO_MESSAGES = {
    b"": b"Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=1; plural=0;\n",
    b"Open the file": "Mở tập tin".encode(),
    b"_Save": "_Lưu".encode(),
    b"_Quit": "Thoát (_Q)".encode(),
    b"%d file\0%d files": "%d tệp".encode(),
    b"%d row\0%d rows": "%d hàng\0%d các hàng".encode(),
    b"menu\x04Print": "In".encode(),
    b"Not yet": b"",
    b"OK": b"OK",
    b"Bold &amp; italic": "Đậm &amp; nghiêng".encode(),
}


def test_read_mo_and_pairs(tmp_path):
    path = write_mo(tmp_path / "app.mo", MO_MESSAGES)
    entries = gettext_mo.read_mo(path)
    plural = next(e for e in entries if e.msgid == "%d file")
    assert plural.msgid_plural == "%d files" and plural.translations == ["%d tệp"]
    assert next(e for e in entries if e.msgid == "Print").context == "menu"
    pairs, skipped = gettext_mo.entry_pairs(entries)
    assert skipped == {"untranslated_entry": 1}  # the header is metadata, not a message
    assert ("Save", "Lưu") in pairs and ("Quit", "Thoát") in pairs
    assert ("%d file", "%d tệp") in pairs and ("%d files", "%d tệp") not in pairs
    assert ("%d row", "%d hàng") in pairs and ("%d rows", "%d các hàng") in pairs
    assert ("Print", "In") in pairs


def test_mo_to_bitext_cli(tmp_path):
    folder = tmp_path / "vi" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    write_mo(folder / "app.mo", MO_MESSAGES)
    out = tmp_path / "mo.tsv"
    assert gettext_mo.main(["--lang", "vi", "--locale-dir", str(tmp_path), "--out", str(out),
                            "--stats", str(tmp_path / "s.json")]) == 0
    pairs = tsv_pairs(out)
    assert ("Bold & italic", "Đậm & nghiêng") in pairs and ("OK", "OK") not in pairs
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["dropped"]["untranslated"] == 1 and stats["pairs"] == len(pairs)


def test_bad_mo(tmp_path):
    bad = tmp_path / "bad.mo"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(OpticalError, match=r"bad.mo: not a \.mo file \(Invalid mo file, magic number is incorrect\)"):
        gettext_mo.read_mo(bad)
    truncated = tmp_path / "truncated.mo"
    truncated.write_bytes(bytes.fromhex("de120495") + b"\x00" * 10)
    with pytest.raises(OpticalError, match="truncated.mo: corrupt .mo file"):
        gettext_mo.read_mo(truncated)
    with pytest.raises(OpticalError, match="no such file"):
        gettext_mo.find_mo_files([tmp_path / "missing"])


# ------------------------------------------------------------------ cleaning


def test_normalize_text():
    assert clean.normalize_text("<b>Bold</b>\tand &amp;lt;Enter&amp;gt;\n") == "Bold and <Enter>"
    assert clean.normalize_text("Vie\u0302\u0323t") == "Việt"  # NFC
    assert clean.normalize_space(" a <b> \n c ") == "a <b> c"


def test_clean_pairs_counts_per_reason():
    pairs = [
        ("Open the file", "Mở tập tin"),
        ("Open the file", "Mở tập tin"),  # duplicate
        ("  ", "trống"),  # empty
        ("Hi", "Đây là một câu rất dài không hề tương ứng với câu tiếng Anh ngắn ngủi"),  # ratio
        ("Python Scripts Organization", "Python Scripts Organization"),  # untranslated
        ("Python Scripts Organization and Location", "Python Scripts Organisation and Location"),
        ("Save &amp; close", "Lưu &amp; đóng"),
    ]
    kept, dropped = clean.clean_pairs(pairs)
    assert kept == [("Open the file", "Mở tập tin"), ("Save & close", "Lưu & đóng")]
    assert dict(dropped) == {"empty": 1, "duplicate": 1, "length_ratio": 1, "untranslated": 2}
    seen = set(kept)
    again, dropped = clean.clean_pairs([("Open the file", "Mở tập tin")], seen=seen)
    assert again == [] and dropped["duplicate"] == 1


def test_tsv_round_trip_and_errors(tmp_path):
    path = tmp_path / "b.tsv"
    assert clean.write_tsv([("a b", "c d")], path) == 1
    assert clean.read_tsv(path) == [("a b", "c d")]
    with pytest.raises(ValueError):
        clean.write_tsv([("a\tb", "c")], path)
    path.write_text("one column only\n", encoding="utf-8")
    with pytest.raises(OpticalError, match=r"b\.tsv:1"):
        clean.read_tsv(path)


# ------------------------------------------------------------------ downloader conversions


def test_opus100_conversion(tmp_path):
    from datasets import Dataset

    ds = Dataset.from_dict({"translation": [{"en": "Good morning.", "vi": "Chào buổi sáng."},
                                            {"en": "Thank you.", "vi": "Cảm ơn bạn."},
                                            {"en": "Thank you.", "vi": "Cảm ơn bạn."}]})
    pairs = download.opus100_pairs(ds, "vi")
    assert pairs[0] == ("Good morning.", "Chào buổi sáng.")
    stats = download.pairs_to_tsv(pairs, tmp_path / "o.tsv")
    assert stats["pairs"] == 2 and stats["dropped"]["duplicate"] == 1
    with pytest.raises(OpticalError, match="expected 'en' and 'km'"):
        download.opus100_pairs(ds, "km")


def test_parallel_sentences_conversion():
    from datasets import Dataset

    ds = Dataset.from_dict({"english": ["I love you.", "Hello"],
                            "non_english": ["Anh yêu em.", "Xin chào"]})
    assert download.english_non_english_pairs(ds) == [("I love you.", "Anh yêu em."),
                                                      ("Hello", "Xin chào")]
    with pytest.raises(OpticalError, match="non_english"):
        download.english_non_english_pairs(Dataset.from_dict({"english": ["x"]}))


def test_flores_conversion():
    from datasets import Dataset

    meta = {"iso_639_3": ["eng"] * 2, "iso_15924": ["Latn"] * 2, "domain": ["wikinews"] * 2}
    en = Dataset.from_dict({"id": [1, 2], "text": ["The cat sat.", "It rained."], **meta})
    vi = Dataset.from_dict({"id": [2, 1], "text": ["Trời mưa.", "Con mèo ngồi."], **meta})
    assert download.flores_pairs(en, vi) == [("The cat sat.", "Con mèo ngồi."),
                                             ("It rained.", "Trời mưa.")]
    old = Dataset.from_dict({"id": [1], "sentence": ["Con mèo ngồi."]})
    assert download.flores_pairs(en, old)[0] == ("The cat sat.", "Con mèo ngồi.")
    paired = Dataset.from_dict({"id": [1], "sentence_eng_Latn": ["The cat sat."],
                                "sentence_vie_Latn": ["Con mèo ngồi."]})
    assert download.flores_pairs(paired, code="vie_Latn") == [("The cat sat.", "Con mèo ngồi.")]


def test_clir_translated_only(trees, tmp_path):
    en_root, vi_root = trees
    vi_pages = lo.read_pages(vi_root, "vi")
    # Make page b's Vietnamese title the English one, as untranslated pages have.
    vi_pages["text/swriter/b.html"] = vi_pages["text/swriter/b.html"].replace(
        "<title>Xoá bảng</title>", "<title>Deleting Tables</title>")
    stats = lo.prepare(lo.read_pages(en_root, "en-US"), vi_pages, tmp_path, test_fraction=0.99,
                       dev_fraction=0.0, clir_translated_only=True)
    ids = [d["_id"] for d in read_jsonl(tmp_path / "clir" / "corpus.jsonl")]
    assert stats["pages"]["test"] == 4 and "swriter/b" not in ids and len(ids) == 3


def test_page_pairs_are_whole_training_pages(prepared):
    """pages.tsv: one line per training page, each side "title text" as the CLIR corpus
    builds a document; train+pages.tsv: the sentence pairs, then the page pairs."""
    out, stats = prepared
    page_pairs = tsv_pairs(out / "pages.tsv")
    assert page_pairs and stats["pairs"]["train_pages"] == len(page_pairs)
    train_text = {e for e, _ in tsv_pairs(out / "train.tsv")}
    test_titles = {q["text"] for q in read_jsonl(out / "clir" / "queries.jsonl")}
    for english, other in page_pairs:
        title = next(t for t, _, _ in EN.values() if english.startswith(t))
        assert title not in test_titles  # training pages only
        assert any(unit in english for unit in train_text)  # the page's own paragraphs, joined
        assert other != english
    assert tsv_pairs(out / "train+pages.tsv") == tsv_pairs(out / "train.tsv") + page_pairs


@settings(deadline=None)
@given(data=st.one_of(st.binary(max_size=120),
                      st.binary(max_size=100).map(lambda b: bytes.fromhex("de120495") + b),
                      st.binary(max_size=100).map(lambda b: bytes.fromhex("950412de") + b)))
def test_read_mo_on_any_bytes_works_or_says_why(data):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.mo"
        path.write_bytes(data)
        try:
            entries = gettext_mo.read_mo(path)
        except OpticalError as err:
            assert "\n" not in str(err) and "x.mo" in str(err)
        else:
            assert all(isinstance(e.msgid, str) for e in entries)
