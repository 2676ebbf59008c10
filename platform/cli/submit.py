"""`vidistill submit-job KIND`: one sub-command per registered kind, its options generated from the kind's schema."""
from __future__ import annotations

import importlib

import os
import shlex
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import click
import yaml
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from vidistill.platform.cli.common import _maybe_start_dispatcher, _print_json, _queue
from vidistill.platform.kinds import ConfigError, JobKind, UnknownKind, all_kinds, get_kind
from vidistill.platform.queue import JobNotFound
from vidistill.trainers.schema import Schema, flat_fields, strip_optional, type_name
from vidistill.platform import submission

# -- submit-job ------------------------------------------------------------------

_COMMON = ("config_file", "priority", "after", "max_attempts", "owner", "as_json", "argv")


class SubmitJobGroup(click.Group):
    """One sub-command per registered kind, with the kind's config fields as options."""

    def list_commands(self, ctx):
        return [kind.name for kind in all_kinds()]

    def get_command(self, ctx, name):
        try:
            return _kind_command(get_kind(name))
        except UnknownKind:
            return None

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            raise click.UsageError(str(UnknownKind(name, self.list_commands(ctx))), ctx)
        return super().resolve_command(ctx, args)


@click.group("submit-job", cls=SubmitJobGroup)
def submit_job() -> None:
    """Queue a job of kind KIND and print its id.

    \b
    Each kind takes its own options (`vidistill submit-job KIND --help`); a
    YAML/JSON file given with --config supplies the same fields, and options on
    the command line override it. The config is checked now: a bad one is
    refused with the field and the reason, never discovered later on a worker.

    \b
    Examples:
      vidistill submit-job command --gpus 1 -- python train.py --lr 0.1
      vidistill submit-job command --cpus 0.5 --priority 10 -- ./preprocess.sh
      id=$(vidistill submit-job command -- ./a.sh)
      vidistill submit-job command --after "$id" -- ./b.sh     # runs once a.sh succeeded

    If no dispatcher is alive, one is started in the background (log under
    $VIDISTILL_HOME/dispatcher.log); set VIDISTILL_AUTOSTART_DISPATCHER=0 to
    run `vidistill dispatcher` yourself instead.
    """


def _kind_command(kind: JobKind) -> click.Command:
    params: list[click.Parameter] = []
    # Fields a kind fills in itself at submission (json_schema_extra cli False) get no option.
    fields = [(name, info) for name, info in kind.config_class.model_fields.items() if _is_option(info)]
    for name, info in fields:
        if name in _COMMON:
            raise ValueError(f"job kind {kind.name!r}: config field {name!r} clashes with a submit-job option")
        params.append(_field_option(name, info))
    params += [
        click.Option(["--config", "config_file"], type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="YAML or JSON file of config fields; options given here override it."),
        click.Option(["--priority"], type=int, default=0, show_default=True,
                     help="Higher runs first; equal priorities run oldest first."),
        click.Option(["--after", "after"], type=int, multiple=True, metavar="JOB_ID",
                     help="Run only after this job succeeded (repeat for several). "
                          "If it fails or is cancelled, this job fails too."),
        click.Option(["--max-attempts"], type=click.IntRange(min=1), default=3, show_default=True,
                     help="Attempts before giving up when the worker, node or dispatcher dies "
                          "(a program that exits non-zero fails at once)."),
        click.Option(["--owner"], default=None, help="Owner recorded on the job [default: your user name]."),
        click.Option(["--json", "as_json"], is_flag=True, help="Print the whole job as JSON, not just its id."),
    ]
    if kind.argv_field:
        params.append(click.Argument(["argv"], nargs=-1, type=click.UNPROCESSED))

    def callback(config_file, priority, after, max_attempts, owner, as_json, argv=(), **options):
        data: dict[str, Any] = {}
        if config_file is not None:
            data.update(_load_config_file(config_file))
        for name, info in fields:
            value = options[f"cfg_{name}"]
            if value is None or value == ():
                continue
            data[name] = _option_value(name, value, info.annotation)
        if argv:
            if kind.argv_field in data and options.get(f"cfg_{kind.argv_field}") is not None:
                raise click.UsageError(f"give the {kind.argv_field} either as --{kind.argv_field} or after --, not both")
            data[kind.argv_field] = argv[0] if len(argv) == 1 else shlex.join(argv)
        if "workdir" in {name for name, _ in fields} and not data.get("workdir"):
            data["workdir"] = os.getcwd()
        queue = _queue()
        try:
            job = submission.submit_job(queue, kind.name, data, owner=owner, priority=priority, depends_on=after,
                               max_attempts=max_attempts)
        except (ConfigError, JobNotFound) as error:
            raise click.UsageError(str(error)) from None
        if as_json:
            _print_json(job.to_dict())
        else:
            click.echo(job.id)
        _maybe_start_dispatcher(queue.settings)

    help_text = kind.summary
    if kind.argv_field:
        help_text += (f"\n\nThe {kind.argv_field} may also follow `--`: one argument is taken as a "
                      "shell line (pipes, `;`, $VARS work), several are quoted word by word. E.g.\n\n"
                      f"\b\n  vidistill submit-job {kind.name} --gpus 1 -- python train.py --epochs 3"
                      f"\n  vidistill submit-job {kind.name} -- 'python prep.py | tee prep.txt'")
    return click.Command(
        kind.name,
        params=params,
        callback=callback,
        help=help_text,
        epilog=_settable_fields(kind),
        short_help=kind.summary,
        options_metavar="[OPTIONS]",
    )


def _is_option(info: FieldInfo) -> bool:
    return (info.json_schema_extra or {}).get("cli", True) if isinstance(info.json_schema_extra, dict) else True


def _settable_fields(kind: JobKind) -> str | None:
    """The fields `--set NAME=VALUE` reaches, listed under the options: a kind's `set` field names
    the Schema it overrides (`json_schema_extra={"overrides": "module:Class"}`), or the kind
    resolves a nested section of the training config (training, evaluation)."""
    if "set" not in kind.config_class.model_fields:
        return None
    extra = kind.config_class.model_fields["set"].json_schema_extra
    target = extra.get("overrides") if isinstance(extra, dict) else None
    if target:
        module, _, name = target.partition(":")
        return _field_list(getattr(importlib.import_module(module), name), "", "Fields of --set NAME=VALUE:")
    nested = [strip_optional(info.annotation) for info in kind.config_class.model_fields.values()
              if not _is_option(info)]
    nested = [cls for cls in nested if isinstance(cls, type) and issubclass(cls, Schema)]
    if not nested:
        return None
    from vidistill.trainers.config import TrainConfig

    # A section of the training config (evaluation's data section) is set by its dotted name.
    prefix = next((f"{name}." for name, info in TrainConfig.model_fields.items() if info.annotation is nested[0]), "")
    return _field_list(nested[0], prefix, "Fields of --set NAME=VALUE (and of --train-config files):")


def _field_list(schema: type[Schema], prefix: str, title: str) -> str:
    lines = ["\b", title]
    for name, info in flat_fields(schema, prefix):
        default = info.get_default(call_default_factory=True)
        text = f"  {name} ({type_name(info.annotation)}, " + ("required" if info.is_required() else f"default {default!r}") + ")"
        if info.description:
            text += f": {info.description}"
        lines.append(text)
    return "\n".join(lines)


def _field_option(name: str, info: FieldInfo) -> click.Option:
    option = name.replace("_", "-")
    help_text = info.description or ""
    if info.is_required():
        help_text += "  [required]"
    elif info.default is not PydanticUndefined and info.default is not None:
        help_text += f"  [default: {info.default}]"
    base = strip_optional(info.annotation)
    origin = get_origin(base)
    decl = [f"--{option}", f"cfg_{name}"]
    if base is bool:
        return click.Option([f"--{option}/--no-{option}", f"cfg_{name}"], default=None, help=help_text)
    if origin is Literal:
        return click.Option(decl, type=click.Choice([str(a) for a in get_args(base)]), default=None, help=help_text)
    if origin is list:
        (item,) = get_args(base) or (str,)
        return click.Option(decl, type=_click_type(item), multiple=True, help=help_text + "  (repeat for several)")
    if origin is dict:
        return click.Option(decl, multiple=True, metavar="KEY=VALUE", help=help_text + "  (repeat for several)")
    return click.Option(decl, type=_click_type(base), default=None, help=help_text)


def _click_type(hint):
    return {int: click.INT, float: click.FLOAT, str: click.STRING}.get(hint, click.STRING)


def _option_value(name: str, value, hint):
    base = strip_optional(hint)
    if get_origin(base) is dict:
        pairs = {}
        for item in value:
            key, sep, val = item.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=f"--{name.replace('_', '-')}")
            pairs[key] = val
        return pairs
    if get_origin(base) is list:
        return list(value)
    if get_origin(base) is Literal:
        for allowed in get_args(base):
            if str(allowed) == value:
                return allowed
    return value


def _load_config_file(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise click.BadParameter(f"{path} is not valid YAML/JSON: {error}", param_hint="--config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a mapping of field: value", param_hint="--config")
    return data
