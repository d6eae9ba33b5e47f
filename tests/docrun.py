"""Runs the ``python`` blocks of one docs page in one interpreter (for
tests/test_docs.py): each block in a fresh ``__main__`` module, as a reader would
paste them one after the other into a session. The outcome of each (None, or the
traceback) is written to a JSON file as soon as it is known, so that a block that
kills the interpreter still leaves the outcomes of the blocks before it.

    python tests/docrun.py BLOCKS.json OUTCOMES.json
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import types


def run_block(code: str, name: str) -> str | None:
    # Compiled from a real file: tracebacks (the workers' too) show its lines.
    path = os.path.abspath(f"{name}.py")
    with open(path, "w") as f:
        f.write(code)
    module = types.ModuleType("__main__")
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = module  # functions defined here pickle by value, as in a script
    try:
        exec(compile(code, path, "exec"), module.__dict__)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return f"SystemExit({exc.code!r})"
    except BaseException:
        return traceback.format_exc()
    finally:
        sys.modules["__main__"] = saved
    return None


def main() -> None:
    blocks_path, outcomes_path = sys.argv[1:3]
    with open(blocks_path) as f:
        blocks: list[list[str]] = json.load(f)
    outcomes: list[str | None] = []
    for name, code in blocks:
        outcomes.append(run_block(code, name))
        with open(outcomes_path, "w") as f:
            json.dump(outcomes, f)


if __name__ == "__main__":
    main()
