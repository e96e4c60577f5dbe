"""Bad exports are refused with the file, the place in it (JSON path or line/column) and what was expected."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from importer import ImportInputError, ReadLimits
from importer.run import run_import
from store.connection import Database
from tests.importer.helpers import FIRE_BLAST, SAMPLES, STREAMING, load, make_tar, make_zip, read_all

Edit = Callable[[str, Callable[[Any], Any]], None]
BOTH = pytest.mark.parametrize("limits", [ReadLimits(), STREAMING], ids=["whole", "streamed"])


def refused(path: Path | str, limits: ReadLimits | None = None, strict: bool = False) -> ImportInputError:
    with pytest.raises(ImportInputError) as info:
        read_all(path, limits, strict)
    return info.value


def check(exc: ImportInputError, file: str, location: str, expected: str) -> None:
    assert (exc.file, exc.location) == (file, location), str(exc)
    assert expected in exc.expected, str(exc)
    assert str(exc).startswith(f"{file}: {location}: " if location else f"{file}: ")


def line_column(raw: bytes, at: int) -> str:
    line = raw.count(b"\n", 0, at) + 1
    column = at - raw.rfind(b"\n", 0, at)
    return f"line {line}, column {column}"


def replace_once(path: Path, old: bytes, new: bytes) -> int:
    raw = path.read_bytes()
    at = raw.index(old)
    path.write_bytes(raw[:at] + new + raw[at + len(old) :])
    return at


# --- where the export is and what it is -------------------------------------------------------------


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    check(refused(missing), str(missing), "", "nothing is there")


def test_file_that_is_not_an_archive(tmp_path: Path) -> None:
    text = tmp_path / "export.json"
    text.write_text("{}")
    check(refused(text), str(text), "", "a directory, a .zip or a .tar.gz of an export (not an archive)")


def test_corrupt_zip(tmp_path: Path) -> None:
    bad = tmp_path / "e.zip"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    check(refused(bad), str(bad), "", "a readable zip archive")


def test_corrupt_tar_gz(tmp_path: Path) -> None:
    bad = tmp_path / "e.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 20)
    check(refused(bad), str(bad), "", "a readable .tar.gz archive")


# --- layout ------------------------------------------------------------------------------------------


def test_missing_i12(sample: Path) -> None:
    (sample / "I12.json").unlink()
    check(refused(sample), "I12.json", "", "I12.json (the archetypes) at the top of the export")


def test_missing_enhdb(sample: Path) -> None:
    (sample / "EnhDB.json").unlink()
    check(
        refused(sample), "EnhDB.json", "", "EnhDB.json (the enhancements and sets) at the top of the export"
    )


def test_no_db_folder(sample: Path) -> None:
    shutil.rmtree(sample / "db")
    check(refused(sample), "db/", "", "a db/ folder of powerset files")


def test_db_folder_without_json_files(sample: Path) -> None:
    for path in (sample / "db" / "Player").iterdir():
        path.unlink()
    (sample / "db" / "Player" / "readme.txt").write_text("nothing here")
    check(refused(sample), "db/", "", "at least one powerset file db/**/*.json")


def test_too_many_files(sample: Path) -> None:
    check(refused(sample, ReadLimits(max_files=3)), str(sample), "", "at most 3 files (ReadLimits.max_files)")


def test_a_json_file_that_is_not_a_regular_file(sample: Path) -> None:
    os.mkfifo(sample / "db" / "Player" / "pipe.json")
    check(refused(sample), "db/Player/pipe.json", "", "a regular file")


# --- bytes and syntax ----------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"], ids=["empty", "bom-only"])
def test_empty_file(sample: Path, limits: ReadLimits, content: bytes) -> None:
    (sample / FIRE_BLAST).write_bytes(content)
    check(refused(sample, limits), FIRE_BLAST, "line 1, column 1", "a JSON object; the file is empty")


def test_truncated_json_whole(sample: Path) -> None:
    path = sample / FIRE_BLAST
    raw = path.read_bytes()
    cut = raw[: raw.index(b'"Effects"', len(raw) // 2)]
    path.write_bytes(cut)
    where = line_column(cut, len(cut))
    check(refused(sample), FIRE_BLAST, where, "complete JSON; the file ends too early (truncated?)")


def test_truncated_json_inside_a_string(sample: Path) -> None:
    path = sample / FIRE_BLAST
    raw = path.read_bytes()
    at = raw.index(b'"DescLong": "') + len(b'"DescLong": ')
    path.write_bytes(raw[: at + 10])
    check(refused(sample), FIRE_BLAST, line_column(raw, at), "the file ends too early (truncated?)")


def test_truncated_json_streamed(sample: Path) -> None:
    path = sample / FIRE_BLAST
    raw = path.read_bytes()
    path.write_bytes(raw[: raw.index(b'"Effects"', len(raw) // 2)])
    exc = refused(sample, STREAMING)
    assert exc.file == FIRE_BLAST
    assert exc.location.startswith("$.Powers[")
    assert exc.expected == "complete JSON; the file ends too early (truncated?)"


def test_trailing_garbage(sample: Path) -> None:
    path = sample / "EnhDB.json"
    raw = path.read_bytes() + b"\n}"
    path.write_bytes(raw)
    check(refused(sample), "EnhDB.json", line_column(raw, len(raw) - 1), "valid JSON (Extra data)")


@BOTH
def test_invalid_utf8(sample: Path, limits: ReadLimits) -> None:
    path = sample / FIRE_BLAST
    at = replace_once(path, b"Flares", b"Fl\xffres") + 2
    where = f"{line_column(path.read_bytes(), at)} (byte {at})"
    check(refused(sample, limits), FIRE_BLAST, where, "UTF-8 text (invalid start byte)")


@BOTH
def test_invalid_utf8_after_a_bom(sample: Path, limits: ReadLimits) -> None:
    path = sample / "I12.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    at = replace_once(path, b'"Blaster"', b'"Bl\xc3ster"') + 3
    raw = path.read_bytes()
    where = f"{line_column(raw, at)} (byte {at})"
    check(refused(sample, limits), "I12.json", where, "UTF-8 text (invalid continuation byte)")


@BOTH
def test_lone_surrogate_escape(sample: Path, limits: ReadLimits) -> None:
    path = sample / "EnhDB.json"
    at = replace_once(path, b'"Devastation"', b'"Dev\\ud800astation"') + 4
    check(refused(sample, limits), "EnhDB.json", line_column(path.read_bytes(), at), "lone surrogate")


# --- values the JSON standard or the parsers refuse ------------------------------------------------------


@BOTH
def test_duplicate_key_inside_one_object(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    def mark(doc: Any) -> None:
        doc["Powers"][3]["Effects"][2]["__DUP__"] = 1

    edit_json(FIRE_BLAST, mark)
    replace_once(sample / FIRE_BLAST, b'"__DUP__": 1', b'"Scale": 5')
    exc = refused(sample, limits)
    check(
        exc, FIRE_BLAST, "$.Powers[3].Effects[2]", 'an object whose keys appear once; "Scale" appears twice'
    )


@BOTH
def test_duplicate_top_level_key(sample: Path, limits: ReadLimits) -> None:
    replace_once(sample / "EnhDB.json", b"{", b'{\n  "Enhancements": [],')
    check(refused(sample, limits), "EnhDB.json", "$", '"Enhancements" appears twice')


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity(sample: Path, edit_json: Edit, literal: bytes) -> None:
    def mark(doc: Any) -> None:
        doc["Powers"][1]["Accuracy"] = "__NUMBER__"

    edit_json(FIRE_BLAST, mark)
    replace_once(sample / FIRE_BLAST, b'"__NUMBER__"', literal)
    check(
        refused(sample),
        FIRE_BLAST,
        "$.Powers[1].Accuracy",
        f"a finite number, integers within ±(2**63-1); found {literal.decode()}",
    )
    streamed = refused(sample, STREAMING)
    # yajl refuses these as bad syntax at the same place, quoting the text.
    check(streamed, FIRE_BLAST, "$.Powers[1].Accuracy", "valid JSON (lexical error")
    assert literal.decode().lstrip("-") in streamed.expected


@pytest.mark.parametrize(
    ("literal", "shown"), [(b"1e400", "inf"), (b"-12345678901234567890", "-12345678901234567890")]
)
def test_numbers_beyond_float_or_64_bit_range(
    sample: Path, edit_json: Edit, literal: bytes, shown: str
) -> None:
    def mark(doc: Any) -> None:
        doc["Enhancements"][2]["LevelMax"] = "__NUMBER__"

    edit_json("EnhDB.json", mark)
    replace_once(sample / "EnhDB.json", b'"__NUMBER__"', literal)
    check(refused(sample), "EnhDB.json", "$.Enhancements[2].LevelMax", f"found {shown}")
    check(refused(sample, STREAMING), "EnhDB.json", "$.Enhancements[2].LevelMax", "overflow")


@BOTH
def test_nesting_deeper_than_the_limit(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    def nest(doc: Any) -> None:
        doc["Archetypes"][1]["Deep"] = [[["x"]]]

    edit_json("I12.json", nest)
    # $ (1) > Archetypes (2) > [1] (3) > Deep (4) > [0] (5) > [0][0] (6): the sixth level is one too many.
    tight = ReadLimits(max_depth=5, whole_parse_max_bytes=limits.whole_parse_max_bytes)
    check(refused(sample, tight), "I12.json", "$.Archetypes[1].Deep[0][0]", "nested at most 5 levels deep")


@BOTH
def test_nesting_deeper_than_the_default_limit(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    def nest(doc: Any) -> None:
        deep: list[Any] = []
        for _ in range(70):
            deep = [deep]
        doc["Enhancements"][0]["Deep"] = deep

    edit_json("EnhDB.json", nest)
    # Levels to Deep: $, Enhancements, [0], Deep = 4; the 65th container is Deep's 61st nested list.
    where = "$.Enhancements[0].Deep" + "[0]" * 61
    check(
        refused(sample, limits), "EnhDB.json", where, "nested at most 64 levels deep (ReadLimits.max_depth)"
    )


def test_nesting_too_deep_for_python_falls_back_to_the_streaming_parser(sample: Path) -> None:
    # json.loads gives up (RecursionError) long before this; the reader must still name the place.
    path = sample / "I12.json"
    raw = path.read_bytes()
    path.write_bytes(
        raw.replace(b'"Archetypes": [', b'"Deep": ' + b"[" * 5000 + b"]" * 5000 + b', "Archetypes": [', 1)
    )
    where = "$.Deep" + "[0]" * 63  # $ is level 1, Deep level 2: the 65th level is Deep[0]...[0], 63 deep
    check(refused(sample), "I12.json", where, "nested at most 64 levels deep")


# --- shapes --------------------------------------------------------------------------------------------


@BOTH
def test_top_level_array_where_an_object_is_expected(sample: Path, limits: ReadLimits) -> None:
    (sample / "EnhDB.json").write_text("[]")
    check(refused(sample, limits), "EnhDB.json", "$", "a JSON object at the top level, found an array")


@BOTH
def test_archetypes_not_a_list(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json("I12.json", lambda doc: doc.update(Archetypes={"Class_Blaster": {}}))
    check(refused(sample, limits), "I12.json", "$.Archetypes", "an array, found an object")


@BOTH
def test_archetypes_missing(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json("I12.json", lambda doc: doc.pop("Archetypes") and None)
    check(
        refused(sample, limits), "I12.json", "$", 'a top-level "Archetypes" array; there is no "Archetypes"'
    )


@BOTH
def test_archetype_that_is_not_an_object(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json("I12.json", lambda doc: doc["Archetypes"].__setitem__(3, "Class_Scrapper"))
    check(
        refused(sample, limits),
        "I12.json",
        "$.Archetypes[3]",
        "an archetype as a JSON object, found a string",
    )


@BOTH
def test_version_missing(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json("I12.json", lambda doc: doc.pop("Version") and None)
    check(refused(sample, limits), "I12.json", "$", 'a "Version" field (the database version)')


@BOTH
def test_powerset_without_fullname(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json(FIRE_BLAST, lambda doc: doc.pop("FullName") and None)
    check(
        refused(sample, limits),
        FIRE_BLAST,
        "$",
        'a powerset with a "FullName" (its natural key); there is none',
    )


@BOTH
def test_powerset_fullname_of_the_wrong_type(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json(FIRE_BLAST, lambda doc: doc.update(FullName=42))
    check(refused(sample, limits), FIRE_BLAST, "$.FullName", "a non-empty string, found a number")


@BOTH
def test_powerset_without_powers(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json(FIRE_BLAST, lambda doc: doc.pop("Powers") and None)
    check(refused(sample, limits), FIRE_BLAST, "$", 'a top-level "Powers" array')


@BOTH
def test_power_fullname_outside_its_powerset(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json(FIRE_BLAST, lambda doc: doc["Powers"][2].update(FullName="Blaster_Ranged.Ice_Blast.Frost"))
    exc = refused(sample, limits)
    check(exc, FIRE_BLAST, "$.Powers[2].FullName", 'a power name starting with "Blaster_Ranged.Fire_Blast."')
    assert 'found "Blaster_Ranged.Ice_Blast.Frost"' in exc.expected


@BOTH
def test_power_effects_not_a_list(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json(FIRE_BLAST, lambda doc: doc["Powers"][4].update(Effects={"Scale": 1}))
    check(refused(sample, limits), FIRE_BLAST, "$.Powers[4].Effects", "an array of effects, found an object")


@BOTH
def test_enhancement_without_uid(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json("EnhDB.json", lambda doc: doc["Enhancements"][4].pop("UID") and None)
    check(
        refused(sample, limits),
        "EnhDB.json",
        "$.Enhancements[4]",
        'an enhancement with a "UID" (its natural key)',
    )


@BOTH
def test_enhancement_with_an_empty_uid(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json("EnhDB.json", lambda doc: doc["Enhancements"][0].update(UID=""))
    check(
        refused(sample, limits),
        "EnhDB.json",
        "$.Enhancements[0].UID",
        "a non-empty string, found an empty string",
    )


@BOTH
def test_set_without_uid(sample: Path, edit_json: Edit, limits: ReadLimits) -> None:
    edit_json("EnhDB.json", lambda doc: doc["EnhancementSets"][1].pop("Uid") and None)
    exc = refused(sample, limits)
    check(exc, "EnhDB.json", "$.EnhancementSets[1]", 'an enhancement set with a "Uid" (its natural key)')


def test_strict_mode_refuses_the_duplicate_archetype(sample: Path) -> None:
    names = [a["ClassName"] for a in load(sample / "I12.json")["Archetypes"]]
    first, second = (i for i, n in enumerate(names) if n == "Class_Minion_Henchman")
    exc = refused(sample, strict=True)
    check(exc, "I12.json", f"$.Archetypes[{second}]", 'a unique archetype key; "Class_Minion_Henchman"')
    assert exc.expected.endswith(f"already read at I12.json: $.Archetypes[{first}]")


# --- limits on size: zip bombs ---------------------------------------------------------------------------


def _with_bomb(sample: Path, size: int) -> None:
    (sample / "db" / "Player" / "zz_bomb.json").write_bytes(b" " * size + b"{}")


def test_zip_bomb_over_the_total_limit(sample: Path, tmp_path: Path) -> None:
    _with_bomb(sample, 3_000_000)
    archive = make_zip(sample, tmp_path / "bomb.zip")
    assert archive.stat().st_size < 500_000
    exc = refused(archive, ReadLimits(max_total_bytes=1_000_000))
    check(
        exc,
        "db/Player/zz_bomb.json",
        "",
        "at most 1000000 bytes uncompressed in all (ReadLimits.max_total_bytes)",
    )


@pytest.mark.parametrize("archived", [False, True], ids=["directory", "zip"])
def test_the_total_limit_holds_while_files_are_hashed_side_by_side(
    sample: Path, tmp_path: Path, db: Database, archived: bool
) -> None:
    """Into a log that holds a release, an import hashes every file first, on several threads."""
    run_import(db, SAMPLES / "mids-20.1224")
    with db.connect() as conn:
        before = conn.execute("SELECT count(*), max(global_position) FROM events").fetchone()
    _with_bomb(sample, 3_000_000)
    export = make_zip(sample, tmp_path / "bomb.zip") if archived else sample
    with pytest.raises(ImportInputError) as info:
        run_import(db, export, limits=ReadLimits(max_total_bytes=1_000_000))
    check(info.value, "db/Player/zz_bomb.json", "", "at most 1000000 bytes uncompressed in all")
    with db.connect() as conn:
        assert conn.execute("SELECT count(*), max(global_position) FROM events").fetchone() == before
        assert conn.execute("SELECT status FROM imports ORDER BY id").fetchall() == [
            ("completed",),
            ("failed",),
        ]


def test_zip_bomb_over_the_file_limit(sample: Path, tmp_path: Path) -> None:
    _with_bomb(sample, 3_000_000)
    archive = make_zip(sample, tmp_path / "bomb.zip")
    exc = refused(archive, ReadLimits(max_file_bytes=1_000_000))
    check(exc, "db/Player/zz_bomb.json", "", "at most 1000000 bytes uncompressed (ReadLimits.max_file_bytes)")


def _understate_size(archive: Path, member: str, size: int) -> None:
    # Rewrite the uncompressed size in the member's local header and central directory entry.
    raw = bytearray(archive.read_bytes())
    name = member.encode()
    for signature, size_at, length_at, name_at in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        at = raw.find(signature)
        while at != -1:
            name_length = int.from_bytes(raw[at + length_at : at + length_at + 2], "little")
            if raw[at + name_at : at + name_at + name_length] == name:
                raw[at + size_at : at + size_at + 4] = size.to_bytes(4, "little")
            at = raw.find(signature, at + 1)
    archive.write_bytes(bytes(raw))


def test_zip_bomb_that_understates_its_size(sample: Path, tmp_path: Path) -> None:
    _with_bomb(sample, 3_000_000)
    archive = make_zip(sample, tmp_path / "bomb.zip")
    _understate_size(archive, "db/Player/zz_bomb.json", 100)
    limits = ReadLimits(max_file_bytes=1_000_000)
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("db/Player/zz_bomb.json").file_size == 100
    exc = refused(archive, limits)
    assert exc.file == "db/Player/zz_bomb.json"


def test_tar_bomb_over_the_total_limit(sample: Path, tmp_path: Path) -> None:
    _with_bomb(sample, 3_000_000)
    archive = make_tar(sample, tmp_path / "bomb.tar.gz")
    exc = refused(archive, ReadLimits(max_total_bytes=1_000_000))
    check(exc, "db/Player/zz_bomb.json", "", "(ReadLimits.max_total_bytes)")


def test_file_over_the_file_limit_in_a_directory(sample: Path) -> None:
    check(refused(sample, ReadLimits(max_file_bytes=100_000)), FIRE_BLAST, "", "(ReadLimits.max_file_bytes)")


# --- paths and links that leave the export ---------------------------------------------------------------


def _zip_with(sample: Path, archive: Path, info: zipfile.ZipInfo, data: bytes = b"{}") -> Path:
    make_zip(sample, archive)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(info, data)
    return archive


def test_zip_member_with_dot_dot(sample: Path, tmp_path: Path) -> None:
    archive = _zip_with(sample, tmp_path / "e.zip", zipfile.ZipInfo("db/../../evil.json"))
    check(
        refused(archive),
        "db/../../evil.json",
        f"in {archive}",
        "a member path inside the export, without '..'",
    )


def test_zip_member_with_an_absolute_path(sample: Path, tmp_path: Path) -> None:
    archive = _zip_with(sample, tmp_path / "e.zip", zipfile.ZipInfo("/etc/evil.json"))
    check(refused(archive), "/etc/evil.json", f"in {archive}", "a relative member path, not an absolute one")


def test_zip_member_with_a_windows_path(sample: Path, tmp_path: Path) -> None:
    archive = _zip_with(sample, tmp_path / "e.zip", zipfile.ZipInfo("..\\evil.json"))
    check(refused(archive), "..\\evil.json", f"in {archive}", "without backslashes")


def test_zip_symlink_member(sample: Path, tmp_path: Path) -> None:
    info = zipfile.ZipInfo("db/Player/link.json")
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    archive = _zip_with(sample, tmp_path / "e.zip", info, b"/etc/passwd")
    check(refused(archive), "db/Player/link.json", f"in {archive}", "links are refused in zips")


def test_symlink_pointing_outside_a_directory_export(sample: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (sample / "db" / "Player" / "evil.json").symlink_to(outside)
    check(
        refused(sample), "db/Player/evil.json", "", "a link to somewhere inside the export; it points outside"
    )


def test_directory_symlink_pointing_outside_a_directory_export(sample: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (sample / "db" / "Other").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    check(refused(sample), "db/Other", "", "it points outside")


def _tar_with(sample: Path, archive: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    make_tar(sample, archive.with_suffix(".tmp"))
    with tarfile.open(archive.with_suffix(".tmp")) as src, tarfile.open(archive, "w:gz") as out:
        for member in src.getmembers():
            out.addfile(member, src.extractfile(member))
        out.addfile(info, io.BytesIO(data) if data else None)
    return archive


@pytest.mark.parametrize("target", ["../../../outside.json", "/etc/passwd"])
def test_tar_symlink_member_pointing_outside(sample: Path, tmp_path: Path, target: str) -> None:
    info = tarfile.TarInfo("db/Player/evil.json")
    info.type = tarfile.SYMTYPE
    info.linkname = target
    archive = _tar_with(sample, tmp_path / "e.tar.gz", info)
    check(
        refused(archive),
        "db/Player/evil.json",
        f"in {archive}",
        f"a link to somewhere inside the export, not to {target}",
    )


def test_tar_hardlink_member_pointing_outside(sample: Path, tmp_path: Path) -> None:
    info = tarfile.TarInfo("db/Player/evil.json")
    info.type = tarfile.LNKTYPE
    info.linkname = "etc/passwd"
    archive = _tar_with(sample, tmp_path / "e.tar.gz", info)
    check(
        refused(archive),
        "db/Player/evil.json",
        f"in {archive}",
        "a hard link to an earlier file inside the export",
    )


def test_tar_member_with_dot_dot(sample: Path, tmp_path: Path) -> None:
    info = tarfile.TarInfo("../evil.json")
    info.size = 2
    archive = _tar_with(sample, tmp_path / "e.tar.gz", info, b"{}")
    check(refused(archive), "../evil.json", f"in {archive}", "without '..'")
    assert not (tmp_path / "evil.json").exists()


def test_tar_member_written_through_a_link(sample: Path, tmp_path: Path) -> None:
    # A link that stays inside is allowed, but nothing may be written through it.
    make_tar(sample, tmp_path / "base.tar")
    archive = tmp_path / "e.tar.gz"
    with tarfile.open(tmp_path / "base.tar") as src, tarfile.open(archive, "w:gz") as out:
        for member in src.getmembers():
            out.addfile(member, src.extractfile(member))
        link = tarfile.TarInfo("db/Here")
        link.type = tarfile.SYMTYPE
        link.linkname = "Player"
        out.addfile(link)
        through = tarfile.TarInfo("db/Here/x.json")
        through.size = 2
        out.addfile(through, io.BytesIO(b"{}"))
    check(refused(archive), "db/Here/x.json", f"in {archive}", "a member path that passes through no link")


def test_tar_device_member(sample: Path, tmp_path: Path) -> None:
    info = tarfile.TarInfo("db/Player/device.json")
    info.type = tarfile.FIFOTYPE
    archive = _tar_with(sample, tmp_path / "e.tar.gz", info)
    check(refused(archive), "db/Player/device.json", f"in {archive}", "a regular file, directory or link")


def test_samples_are_untouched() -> None:
    # The tests above corrupt copies only.
    assert read_all(SAMPLES / "mids-20.1224")
