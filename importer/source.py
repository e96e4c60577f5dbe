"""Read a Mids Reborn export file by file as (kind, natural key, record, location), validating as it goes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NamedTuple

import structlog

from events.canonical import canonical_bytes
from events.mids import ARCHETYPES_FILE, ENHANCEMENTS_FILE, KINDS, NOTE_FILES, POWERSETS_DIR, Kind
from importer.archive import Export, open_export
from importer.errors import ImportInputError
from importer.jsonread import ParsedFile, json_path, json_type, parse_file
from importer.keyset import KeySet
from importer.limits import DEFAULT_LIMITS, ReadLimits
from importer.places import Places

# kind, its array in the file (None: the file itself), its natural key field
_ARRAYS: Final[dict[str, tuple[Kind, str]]] = {
    "Archetypes": ("archetype", "ClassName"),
    "Powers": ("power", "FullName"),
    "Enhancements": ("enhancement", "UID"),
    "EnhancementSets": ("enhancement_set", "Uid"),
}
_ARRAY_OF: Final[dict[Kind, str | None]] = {kind: array for array, (kind, _) in _ARRAYS.items()} | {
    "powerset": None
}
_POWERSET_KEY: Final = "FullName"

READING: Final = "1"
"""The version of the rules that turn a file's bytes into records (validation, natural keys, canonical
form). An import skips a file whose bytes an earlier import read under the same rules (store/files.py):
change it with any change that could make the same bytes give other records, other keys or an error."""

FileKeys = Mapping[str, Sequence[str]]
"""A file's natural keys by kind, in file order (a powerset file: its powerset, then its powers)."""

log = structlog.get_logger()


class SourceRecord(NamedTuple):
    """One entity as found in the export: `record` is the source object unchanged (a powerset without Powers),
    `data` its canonical bytes."""

    kind: Kind
    key: str
    record: dict[str, Any]
    location: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ExportHeader:
    """The release an export holds, from I12.json (`Version` is kept as written: a number or a string)."""

    version: float | int | str
    date: str
    issue: int | None


@dataclass(frozen=True, slots=True)
class DuplicateKey:
    """A natural key met twice in one export: the first record was kept, the second skipped."""

    kind: Kind
    key: str
    first: str
    second: str

    def message(self) -> str:
        """One line for people."""
        return f"duplicate {self.kind} key {self.key!r}: kept {self.first}, skipped {self.second}"

    def as_dict(self) -> dict[str, str]:
        """A JSON-ready form, e.g. for the import's warnings."""
        return {
            "event": "duplicate_key",
            "kind": self.kind,
            "key": self.key,
            "first": self.first,
            "second": self.second,
        }


def read_export(
    path: str | os.PathLike[str], limits: ReadLimits = DEFAULT_LIMITS, strict: bool = False
) -> ExportReader:
    """Open an export (directory, .zip, .tar.gz) and check its layout and header; iterate it for its records."""
    export = open_export(path, limits)
    try:
        return ExportReader(export, limits, strict)
    except BaseException:
        export.close()
        raise


class ExportReader:
    """Iterate once for SourceRecords: I12.json archetypes, then db/**/*.json sorted by path, then EnhDB.json.

    Only one file's parsed content is held at a time. `counts`, `duplicates` and `warnings` grow as records
    are read; `content_hash` is known once the iteration has finished. Use as a context manager, or read to
    the end, so a temporary directory (for a .tar.gz) is removed.
    """

    def __init__(self, export: Export, limits: ReadLimits = DEFAULT_LIMITS, strict: bool = False) -> None:
        self.source = export.name
        self.limits = limits
        self.strict = strict
        self.warnings: list[DuplicateKey] = []
        self.counts: dict[Kind, int] = dict.fromkeys(KINDS, 0)
        self.duplicates: dict[Kind, int] = dict.fromkeys(KINDS, 0)
        self._export = export
        self._files = self._layout(export)
        # Per kind, key -> where it was first read, as a number of `_places`: a few dozen bytes a key, for
        # exports of hundreds of thousands of records.
        self._places = Places()
        self._seen: dict[Kind, KeySet] = {kind: KeySet() for kind in KINDS}
        self._seen["powerset"] = KeySet(expected=len(self._files) - 2)  # one a file
        self._started = False
        self._complete = False
        self._known: Callable[[str], FileKeys | None] | None = None
        self._on_file: Callable[[str, FileKeys | None], None] | None = None
        self._file_keys: dict[str, list[str]] = {}
        self.reused: dict[Kind, int] = dict.fromkeys(KINDS, 0)
        """Records of each kind taken from files not parsed (see `reuse`), duplicates not counted."""
        self.files_reused = 0
        self._archetypes: ParsedFile | None = parse_file(export, ARCHETYPES_FILE, ("Archetypes",), limits)
        self.header = _header(self._archetypes.rest)

    @property
    def files(self) -> Sequence[str]:
        """The files read for records, in reading order."""
        return self._files

    def expect(self, counts: Mapping[str, int]) -> None:
        """Size the record of keys read for about `counts[kind]` keys of each kind (the last import's
        counts are a good guess), before any record is read."""
        if self._started:
            raise RuntimeError("expect() comes before the records are read")
        for kind in KINDS:
            if kind != "powerset" and counts.get(kind):  # the powersets' count is known: one a file
                self._seen[kind] = KeySet(expected=counts[kind])

    @property
    def reading(self) -> str:
        """The rules these files are read under: `READING` and the limits that can refuse a file's content."""
        return f"{READING}/depth{self.limits.max_depth}"

    def reuse(self, known: Callable[[str], FileKeys | None]) -> None:
        """Skip parsing the files for which `known(path)` gives their keys (None: parse it).

        For files whose bytes the log already holds as read (store/files.py): their keys count as read, in
        order, so duplicates and removals come out as a full read gives them, and their records count in
        `reused`, not among the records iterated. The archetypes file (I12.json) is parsed regardless.
        """
        if self._started:
            raise RuntimeError("reuse() comes before the records are read")
        self._known = known

    @property
    def reusable_files(self) -> Sequence[str]:
        """The files `reuse` is asked about, in reading order: all but I12.json, parsed for its header."""
        return self._files[1:]

    def on_file(self, done: Callable[[str, FileKeys | None], None]) -> None:
        """Call `done(path, keys)` as each file's records have all been read: its keys, by kind in file order
        (duplicates included), or None for a file skipped by `reuse`."""
        self._on_file = done

    @property
    def listed(self) -> int:
        """How many files the export lists (every file, not only those read for records)."""
        return len(self._export.files)

    def position(self, rel: str) -> int | None:
        """A file's position in the export's listing (sorted by path), or None when it is not listed."""
        try:
            return self._export.files.index(rel)
        except KeyError:
            return None

    def digest(self, rel: str) -> bytes | None:
        """SHA-256 of a file's raw bytes once it has been read to its end (by `hash_files`, or for its
        records); None before."""
        return self._export.digests.get(rel)

    def seen(self, kind: str, key: str) -> bool:
        """Whether a record of this kind and key has been read so far."""
        seen = self._seen.get(kind)  # type: ignore[call-overload]
        return seen is not None and key in seen

    @property
    def complete(self) -> bool:
        """Whether every record has been read."""
        return self._complete

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of the whole export, once read to the end.

        It is the SHA-256 of the lines `<relative path> NUL <SHA-256 hex of the file's raw bytes> LF` for
        every file read (I12.json, every db/**/*.json, EnhDB.json, and PowerSets.json / PowerPools.json
        when present), sorted by path. Other files do not count; any byte change in these does, BOM included.
        """
        if not self._complete:
            raise RuntimeError("the content hash is known once the export has been read to the end")
        return self._export.content_hash()

    def hash_files(self) -> str:
        """The export's `content_hash`, from the raw bytes alone, before (and without) parsing them.

        Lets an import of an export already in the log stop early; the bytes read here are not
        counted again towards the size limits when the records are read afterwards.
        """
        self._export.hash_all(self._files)
        self._export.hash_all(NOTE_FILES)
        return self._export.content_hash()

    def __iter__(self) -> Iterator[SourceRecord]:
        if self._started:
            raise RuntimeError("an ExportReader is read once; call read_export again")
        self._started = True
        return self._records()

    def close(self) -> None:
        """Release the archive or temporary directory."""
        self._archetypes = None
        self._export.close()

    def __enter__(self) -> ExportReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @staticmethod
    def _layout(export: Export) -> Sequence[str]:
        files = export.files
        for name, holds in ((ARCHETYPES_FILE, "archetypes"), (ENHANCEMENTS_FILE, "enhancements and sets")):
            if name not in files:
                raise ImportInputError(
                    name, "", f"{name} (the {holds}) at the top of the export {export.name}"
                )
        if POWERSETS_DIR not in export.dirs:
            raise ImportInputError(
                f"{POWERSETS_DIR}/", "", f"a {POWERSETS_DIR}/ folder of powerset files in {export.name}"
            )
        # Positions in the listing, which is sorted: the names are made again when asked for, not kept twice.
        powersets = [
            i for i, rel in enumerate(files) if rel.startswith(f"{POWERSETS_DIR}/") and rel.endswith(".json")
        ]
        if not powersets:
            raise ImportInputError(
                f"{POWERSETS_DIR}/", "", f"at least one powerset file {POWERSETS_DIR}/**/*.json"
            )
        return files.names([files.index(ARCHETYPES_FILE), *powersets, files.index(ENHANCEMENTS_FILE)])

    def _records(self) -> Iterator[SourceRecord]:
        try:
            archetypes, self._archetypes = self._archetypes, None
            if archetypes is None:
                raise RuntimeError("this ExportReader is closed")
            yield from self._items(0, archetypes)
            del archetypes
            self._file_done(0)
            for number in range(1, len(self._files) - 1):
                if not self._reused(number):
                    yield from self._powerset_file(number, self._files[number])
                    self._file_done(number)
            last = len(self._files) - 1
            if not self._reused(last):
                yield from self._items(
                    last,
                    parse_file(
                        self._export, ENHANCEMENTS_FILE, ("Enhancements", "EnhancementSets"), self.limits
                    ),
                )
                self._file_done(last)
            self._export.hash_all(NOTE_FILES, threads=1)  # two small files: no thread started
            self._complete = True
        finally:
            self.close()

    def _powerset_file(self, number: int, rel: str) -> Iterator[SourceRecord]:
        parsed = parse_file(self._export, rel, ("Powers",), self.limits)
        powerset = parsed.rest
        full_name = _natural_key(rel, [], powerset, _POWERSET_KEY, "a powerset")
        record = self._accept("powerset", full_name, powerset, number, -1, parsed.rest_data)
        if record is not None:
            yield record
        prefix = f"{full_name}."
        for array, index, item, data in parsed.items:
            path: list[str | int] = [array, index]
            key = _natural_key(rel, path, item, "FullName", "a power")
            if not key.startswith(prefix) or key == prefix:
                raise ImportInputError(
                    rel,
                    json_path([*path, "FullName"]),
                    f'a power name starting with "{prefix}" (its powerset\'s FullName), found "{key}"',
                )
            _check_effects(rel, path, item)
            record = self._accept("power", key, item, number, index, data)
            if record is not None:
                yield record

    def _items(self, number: int, parsed: ParsedFile) -> Iterator[SourceRecord]:
        rel = self._files[number]
        for array, index, item, data in parsed.items:
            kind, field = _ARRAYS[array]
            key = _natural_key(rel, [array, index], item, field, f"an {kind.replace('_', ' ')}")
            record = self._accept(kind, key, item, number, index, data)
            if record is not None:
                yield record

    def _file_done(self, number: int) -> None:
        keys, self._file_keys = self._file_keys, {}
        if self._on_file is not None:
            self._on_file(self._files[number], keys)

    def _reused(self, number: int) -> bool:
        """Take a file's keys instead of its records, if `reuse` knows them; whether it did."""
        if self._known is None:
            return False
        rel = self._files[number]
        known = self._known(rel)
        if known is None or not known.keys() <= _ARRAY_OF.keys():
            return False
        for kind, keys in known.items():
            k: Kind = kind  # type: ignore[assignment]  # checked above
            whole_file = _ARRAY_OF[k] is None
            for index, key in enumerate(keys):
                if self._claim(k, key, number, -1 if whole_file else index):
                    self.reused[k] += 1
        self.files_reused += 1
        if self._on_file is not None:
            self._on_file(rel, None)
        return True

    def _accept(
        self, kind: Kind, key: str, item: dict[str, Any], number: int, index: int, data: bytes | None
    ) -> SourceRecord | None:
        keys = self._file_keys.get(kind)
        if keys is None:
            keys = self._file_keys[kind] = []
        keys.append(key)
        if not self._claim(kind, key, number, index):
            return None
        location = self._location(kind, number, index)
        return SourceRecord(kind, key, item, location, canonical_bytes(item) if data is None else data)

    def _claim(self, kind: Kind, key: str, number: int, index: int) -> bool:
        """Note a key as read at file `number`, item `index` (-1: the file itself); False for a duplicate,
        which is warned of (or refused, when strict) and skipped."""
        try:
            place = self._places.number(number, index)
        except OverflowError as exc:
            raise ImportInputError(self.source, "", f"an export of fewer records ({exc})") from None
        first = self._seen[kind].setdefault(key, place)
        if first is None:
            self.counts[kind] += 1
            return True
        location = self._location(kind, number, index)
        first_location = self._location(kind, *self._places.place(first))
        if self.strict:
            array = _ARRAY_OF[kind]
            rel = self._files[number]
            where = json_path([array, index]) if array else "$"
            raise ImportInputError(
                rel, where, f'a unique {kind} key; "{key}" was already read at {first_location}'
            )
        self.duplicates[kind] += 1
        warning = DuplicateKey(kind, key, first_location, location)
        self.warnings.append(warning)
        log.warning("duplicate_key", kind=kind, key=key, first=first_location, second=location)
        return False

    def _location(self, kind: Kind, number: int, index: int) -> str:
        array = _ARRAY_OF[kind]
        return f"{self._files[number]}: {json_path([array, index]) if array else '$'}"


def _natural_key(rel: str, path: list[str | int], item: Any, field: str, what: str) -> str:
    if not isinstance(item, dict):
        raise ImportInputError(rel, json_path(path), f"{what} as a JSON object, found {json_type(item)}")
    if field not in item:
        raise ImportInputError(
            rel, json_path(path), f'{what} with a "{field}" (its natural key); there is none'
        )
    key = item[field]
    if not isinstance(key, str) or not key:
        found = "an empty string" if key == "" else json_type(key)
        raise ImportInputError(rel, json_path([*path, field]), f"a non-empty string, found {found}")
    return key


def _check_effects(rel: str, path: list[str | int], power: dict[str, Any]) -> None:
    # Projections sum and group over Effects, so its shape is checked here, where the file is named.
    effects = power.get("Effects")
    if effects is None:
        return
    if not isinstance(effects, list):
        raise ImportInputError(
            rel, json_path([*path, "Effects"]), f"an array of effects, found {json_type(effects)}"
        )
    for index, effect in enumerate(effects):
        if not isinstance(effect, dict):
            raise ImportInputError(
                rel,
                json_path([*path, "Effects", index]),
                f"an effect as a JSON object, found {json_type(effect)}",
            )


def _header(fields: dict[str, Any]) -> ExportHeader:
    version = fields.get("Version")
    date = fields.get("Date")
    issue = fields.get("Issue")
    if "Version" not in fields:
        raise ImportInputError(ARCHETYPES_FILE, "$", 'a "Version" field (the database version)')
    if isinstance(version, bool) or not isinstance(version, int | float | str):
        raise ImportInputError(
            ARCHETYPES_FILE, "$.Version", f"a number or a string, found {json_type(version)}"
        )
    if not isinstance(date, str):
        found = "nothing" if "Date" not in fields else json_type(date)
        raise ImportInputError(ARCHETYPES_FILE, "$.Date", f"a string (the database date), found {found}")
    if issue is not None and (isinstance(issue, bool) or not isinstance(issue, int)):
        raise ImportInputError(ARCHETYPES_FILE, "$.Issue", f"an integer or null, found {json_type(issue)}")
    return ExportHeader(version, date, issue)
