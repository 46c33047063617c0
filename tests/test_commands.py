"""The command table (vizkit.commands): every result type has a document, an export and a CLI command, and every CLI
command has a row. Checked by importing what the rows name, so a renamed module or function fails here."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest
from vizkit_cli.main import main

import vizkit.jobs
import vizkit.project.results
from vizkit.commands import COMMANDS, SHARED, Command, command_for_result, job_exports
from vizkit.render.writer import Document, document

ROOT = Path(__file__).resolve().parents[1]
WITH_RESULT = [c for c in COMMANDS if c.result]


def _result_types() -> dict[str, type]:
    """Every dataclass a job hands to the writer: the ``*Result``/``*Output`` types of vizkit.project.results plus
    the result types other modules define, found through the job modules' annotations."""
    found = {name: cls for name, cls in vars(vizkit.project.results).items()
             if dataclasses.is_dataclass(cls) and isinstance(cls, type) and name.endswith(("Result", "Output"))
             and cls.__module__ == vizkit.project.results.__name__}
    for command in WITH_RESULT:
        module = importlib.import_module(command.job)
        for value in vars(module).values():
            if isinstance(value, type) and value.__name__ == command.result:
                found[value.__name__] = value
    return found


def test_every_result_type_has_a_row_a_document_and_a_cli_command() -> None:
    types = _result_types()
    rows = {c.result: c for c in WITH_RESULT}
    assert set(types) == set(rows), "a result type without a row in vizkit.commands, or a row without its type"
    for name, cls in types.items():
        row = command_for_result([k.__name__ for k in cls.__mro__])
        assert row is rows[name]
        make = getattr(importlib.import_module(row.render), row.document)
        params = list(inspect.signature(make).parameters)
        assert len(params) == 2, f"{row.render}.{row.document} takes (result, info)"
        assert row.name in main.commands, f"{name}: no CLI command {row.name!r}"


@pytest.mark.parametrize("command", WITH_RESULT, ids=lambda c: c.name)
def test_every_row_exports_names_that_exist(command: Command) -> None:
    module = importlib.import_module(command.job)
    assert command.exports and f"run_{command.name}" in command.exports, "the job is run_<command>"
    for name in command.exports:
        assert getattr(vizkit.jobs, name) is getattr(module, name)
    assert any(name.endswith("Config") for name in command.exports)


def test_shared_exports_and_no_name_twice() -> None:
    for module, names in SHARED.items():
        for name in names:
            assert getattr(vizkit.jobs, name) is getattr(importlib.import_module(module), name)
    listed = [n for c in COMMANDS for n in c.exports] + [n for names in SHARED.values() for n in names]
    assert len(listed) == len(set(listed)) == len(job_exports()) == len(vizkit.jobs.__all__)
    with pytest.raises(AttributeError):
        vizkit.jobs.no_such_name  # noqa: B018


def test_every_cli_command_has_a_row_and_its_own_module() -> None:
    names = [c.name for c in COMMANDS]
    assert len(names) == len(set(names))
    assert set(main.commands) == set(names)
    for name in names:
        assert (ROOT / "cli" / f"{name}.py").is_file(), f"cli/{name}.py"
        assert main.commands[name].callback is not None


def test_the_writer_refuses_a_type_without_a_row() -> None:
    class Unknown:
        pass

    with pytest.raises(TypeError, match=r"vizkit\.commands"):
        document(Unknown(), None)  # type: ignore[arg-type]


def test_document_functions_return_documents() -> None:
    for command in WITH_RESULT:
        make = getattr(importlib.import_module(command.render), command.document)
        hints = inspect.signature(make).return_annotation
        assert hints in (Document, "Document"), f"{command.render}.{command.document} returns a Document"
