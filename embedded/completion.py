"""Shell completion for `herald`: the bash and zsh scripts, and the candidates they ask for.

The scripts are generated from the command line's own parser (its subcommands and each
one's options), so they never drift from it. What only a running instance knows (task
names, recent task ids, a task's parameters) the scripts ask `herald completion --words
KIND` for at the moment of completing: one short process, quiet when Herald is not running.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Commands whose positional arguments are task ids, and the one that takes a task name.
ID_COMMANDS = ("show", "cancel", "follow", "rerun", "rm", "logs")
RECENT_IDS = 50  # ids offered: the newest tasks'


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]


def _self() -> str:
    """How the script runs herald again: the bundle itself when frozen, else `herald`."""
    return sys.executable if getattr(sys, "frozen", False) else "herald"


def bash_script(parser: argparse.ArgumentParser) -> str:
    """A bash completion script (`source <(herald completion bash)`)."""
    subs = _subcommands(parser)
    cases = []
    for name, sub in subs.items():
        words = _options(sub) + list(_subcommands(sub))
        cases.append(f"            {name}) opts={_quote(' '.join(words))};;")
    me = _quote(_self())
    return f"""# bash completion for herald; load it with: source <(herald completion bash)
_herald_words() {{  # what only the running instance knows ($dd: _herald's --data-dir)
    {me} "${{dd[@]}}" completion --words "$1" 2>/dev/null
}}
_herald() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local cmd="" at=0 i dd=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --data-dir) dd=(--data-dir "${{COMP_WORDS[i+1]}}"); ((i++));;
            -*) ;;
            *) cmd="${{COMP_WORDS[i]}}"; at=$i; break;;
        esac
    done
    if [[ "$prev" == --data-dir ]]; then
        COMPREPLY=($(compgen -d -- "$cur")); return
    fi
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W {_quote(' '.join(_options(parser) + list(subs)))} -- "$cur"))
        return
    fi
    local opts=""
    case "$cmd" in
{chr(10).join(cases)}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur")); return
    fi
    local words=""
    case "$cmd" in
        {'|'.join(ID_COMMANDS)}) words="$(_herald_words ids)";;
        submit)
            if ((COMP_CWORD == at + 1)); then
                words="$(_herald_words tasks)"
            else
                words="$(_herald_words "params:${{COMP_WORDS[at+1]}}")"
                compopt -o nospace 2>/dev/null
            fi;;
        completion) words="bash zsh";;
        token) ((COMP_CWORD == at + 1)) && words="create list revoke";;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _herald herald
"""


def zsh_script(parser: argparse.ArgumentParser) -> str:
    """A zsh completion function (save it as `_herald` in a folder of $fpath, or
    `source <(herald completion zsh)` after compinit)."""
    subs = _subcommands(parser)
    described = [_quote(name + ":" + _help(parser, name).replace(":", "\\:"))
                 for name in subs]  # fmt: skip
    cases = [f"        {name}) opts=({' '.join(_options(sub) + list(_subcommands(sub)))});;"
             for name, sub in subs.items()]  # fmt: skip
    me = _quote(_self())
    return f"""#compdef herald
# zsh completion for herald: save as _herald in a folder of $fpath (or source it)
_herald_words() {{  # what only the running instance knows ($dd: _herald's --data-dir)
    {me} "${{dd[@]}}" completion --words "$1" 2>/dev/null
}}
_herald() {{
    local -a commands opts  # not `words`: zsh's own array of the command line
    commands=({' '.join(described)})
    local i at=0 cmd="" dd=()
    for ((i = 2; i < CURRENT; i++)); do
        case "${{words[i]}}" in
            --data-dir) dd=(--data-dir "${{words[i+1]}}"); ((i++));;
            -*) ;;
            *) cmd="${{words[i]}}"; at=$i; break;;
        esac
    done
    if [[ -z "$cmd" ]]; then
        if [[ "$PREFIX" == -* ]]; then
            compadd -- {' '.join(_options(parser))}
        else
            _describe command commands
        fi
        return
    fi
    case "$cmd" in
{chr(10).join(cases)}
    esac
    if [[ "$PREFIX" == -* ]]; then
        compadd -- $opts; return
    fi
    local -a cands
    case "$cmd" in
        {'|'.join(ID_COMMANDS)}) cands=(${{(f)"$(_herald_words ids)"}});;
        submit)
            if ((CURRENT == at + 1)); then
                cands=(${{(f)"$(_herald_words tasks)"}})
            else
                cands=(${{(f)"$(_herald_words "params:${{words[at+1]}}")"}})
                compadd -S '' -- $cands; return
            fi;;
        completion) cands=(bash zsh);;
        token) ((CURRENT == at + 1)) && cands=(create list revoke);;
    esac
    compadd -- $cands
}}
if [[ "$funcstack[1]" == _herald ]]; then _herald "$@"; else compdef _herald herald; fi
"""


def _help(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return str(choice.help or "")
    return ""


def _quote(text: str) -> str:
    """`text` as one single-quoted shell word."""
    return "'" + text.replace("'", "'\\''") + "'"


def words(kind: str, data_dir: Path) -> list[str]:
    """Completion candidates from the running instance: "tasks" (names), "ids" (the
    newest tasks' id prefixes) or "params:TASK" ("key=" for each of its parameters)."""
    from embedded.client import HeraldClient

    with HeraldClient.for_data_dir(data_dir) as client:
        if kind == "tasks":
            return [t["name"] for t in client.catalog()]
        if kind == "ids":
            return [t["id"][:8] for t in client.list_tasks(limit=RECENT_IDS).tasks]
        if kind.startswith("params:"):
            name = kind.partition(":")[2]
            spec = next((t for t in client.catalog() if t["name"] == name), None)
            return [p["name"] + "=" for p in spec["params"]] if spec else []
    return []


def completion_command(parser: argparse.ArgumentParser, shell: str | None, kind: str | None,
                       data_dir: Path) -> int:  # fmt: skip
    """`herald completion bash|zsh` (the script) or `--words KIND` (candidates)."""
    if kind is not None:
        if kind not in ("tasks", "ids") and not kind.startswith("params:"):
            print(f"herald: --words takes tasks, ids or params:TASK, not {kind!r}",
                  file=sys.stderr)  # fmt: skip
            return 2
        try:
            found = words(kind, data_dir)
        except (OSError, RuntimeError) as exc:  # not running, unreachable, refused
            print(f"herald: {exc}", file=sys.stderr)
            return 3
        if found:
            print("\n".join(found))
        return 0
    if shell is None:
        print("herald: which shell? `herald completion bash` or `herald completion zsh`",
              file=sys.stderr)  # fmt: skip
        return 2
    sys.stdout.write(bash_script(parser) if shell == "bash" else zsh_script(parser))
    return 0


__all__ = ["bash_script", "completion_command", "words", "zsh_script"]
