"""Build the compiled core ``pm_ws._core_c``, the shared-table reader ``pm_ws._shared_c`` and, where picows
is installed at build time, the picows transport's listener ``pm_ws._picows_listener``.

Before compiling, the core's event-vocabulary files (``pm_ws/_hot/pm_events.h``, ``events_*.pxi``)
are rewritten from ``pm_ws/_events.py`` by ``pm_ws/_events_codegen.py`` when it changed.

Environment switches (the only ones pm_ws reads at build time):
  PM_WS_NO_EXTENSIONS=1   pure-Python install on purpose (then also set it at run time)
  PM_WS_CYTHON_DEBUG=1    bounds/wraparound checks on, -O0 -g, CYTHON_DEBUG asserts
  PM_WS_CYTHON_ANNOTATE=1 write pm_ws/_core_c.html (``cython -a``) next to the source
"""

from __future__ import annotations

import importlib.util
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("PM_WS_NO_EXTENSIONS")
DEBUG = _flag("PM_WS_CYTHON_DEBUG")
ANNOTATE = _flag("PM_WS_CYTHON_ANNOTATE")

# Release: no per-index checks on the hot path; debug turns them all back on
DIRECTIVES = {
    "language_level": "3",
    "boundscheck": DEBUG,  # debug builds catch out-of-range indexing
    "wraparound": DEBUG,  # negative indices are never used on purpose
    "initializedcheck": DEBUG,
    "nonecheck": DEBUG,
    "cdivision": not DEBUG,  # C division semantics; operands are checked non-zero
    "embedsignature": True,
    "emit_code_comments": DEBUG,
}


class BuildExt(build_ext):
    """Turn a missing compiler into one clear sentence instead of a page of distutils output."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - re-raised with the reason attached
            raise SystemExit(_no_compiler_message(exc)) from exc

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        if ext.optional:  # setuptools reports its failure as a warning and goes on without it
            super().build_extension(ext)
            return
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            raise SystemExit(_no_compiler_message(exc)) from exc

    def copy_file(self, infile, outfile, *args, **kwargs):  # type: ignore[no-untyped-def]
        # --inplace: unlink, then copy. Writing over the old .so in place would change the pages
        # of a module that running processes (tests, soak runs) have mapped, and crash them
        if str(outfile).endswith((".so", ".pyd")) and os.path.exists(outfile):
            os.unlink(outfile)
        return super().copy_file(infile, outfile, *args, **kwargs)


def _no_compiler_message(exc: BaseException) -> str:
    return (
        f"pm_ws: building the compiled core failed ({exc}). Install a C compiler and the "
        "Python headers (Debian: apt-get install gcc python3-dev), or install the pure-Python "
        "core on purpose with PM_WS_NO_EXTENSIONS=1."
    )


def _core_c_sources() -> list[str]:
    hot = os.path.join("pm_ws", "_hot")
    return [os.path.join("pm_ws", "_core_c.pxd"), os.path.join("pm_ws", "_shared_layout.pxd")] + sorted(
        os.path.join(hot, name) for name in os.listdir(hot) if name.endswith((".pxi", ".h"))
    )


def _write_vocabulary_files() -> None:
    # The core's enums, matchers and dispatch switch are generated from pm_ws/_events.py (the files
    # are committed; rewritten here only when the vocabulary changed). By path: the package itself
    # cannot be imported before its core is built
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pm_ws", "_events_codegen.py")
    spec = importlib.util.spec_from_file_location("_pm_ws_events_codegen", path)
    assert spec is not None and spec.loader is not None
    codegen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codegen)
    for name in codegen.write():
        print(f"pm_ws/_hot/{name}: rewritten from pm_ws/_events.py", file=sys.stderr)


def _extensions() -> list:
    if NO_EXTENSIONS:
        print("*********************\n* Pure Python build *\n*********************", file=sys.stderr)
        return []
    _write_vocabulary_files()
    from Cython.Build import cythonize
    from setuptools import Extension

    print("*********************\n* Accelerated build *" + (" (debug)" if DEBUG else "") + "\n*********************",
          file=sys.stderr)
    cflags = ["-O0", "-g3", "-UNDEBUG"] if DEBUG else ["-O3"]
    # The core: _core_c.pyx includes the section files in pm_ws/_hot/ and its C headers; depends
    # lists them so an edit to any of them rebuilds the module. The shared table's reader is a
    # module of its own (a reading process needs no dispatcher) on the same sequence-lock header
    macros = [("CYTHON_DEBUG", "1")] if DEBUG else []
    exts = [
        Extension("pm_ws._core_c", ["pm_ws/_core_c.pyx"], extra_compile_args=cflags, define_macros=macros,
                  include_dirs=["pm_ws/_hot"], depends=_core_c_sources()),
        Extension("pm_ws._shared_c", ["pm_ws/_shared_c.pyx"], extra_compile_args=cflags, define_macros=macros,
                  include_dirs=["pm_ws/_hot"], depends=["pm_ws/_hot/pm_seqlock.h", "pm_ws/_shared_layout.pxd"]),
    ]
    # force with ANNOTATE: cythonize skips an unchanged .pyx and would write no HTML
    return cythonize(exts, compiler_directives=DIRECTIVES, annotate=ANNOTATE, force=ANNOTATE,
                     build_dir="build/debug" if DEBUG else None) + _picows_listener(cflags, macros)


def _picows_listener(cflags: list[str], macros: list[tuple[str, str]]) -> list:
    # Optional: compiled against picows's declarations, so built only where picows is importable at build
    # time (pip's isolated build gets it from pyproject's build requirements; picows is never a run-time
    # dependency of the plain install), and a failure leaves it out instead of failing the install. The
    # transport falls back to its Python listener when the module is missing or was built for another picows
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    spec = importlib.util.find_spec("picows")  # finds, does not import
    locations = [] if spec is None else list(spec.submodule_search_locations or [])
    if not any(os.path.exists(os.path.join(folder, "picows.pxd")) for folder in locations):
        return []
    try:
        picows_version = version("picows")
    except PackageNotFoundError:
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    print(f"* picows {picows_version}: building pm_ws._picows_listener (optional) *", file=sys.stderr)
    ext = Extension("pm_ws._picows_listener", ["pm_ws/_picows_listener.pyx"], extra_compile_args=cflags,
                    define_macros=[*macros, ("PM_WS_PICOWS_VERSION", f'"{picows_version}"')], optional=True)
    try:  # the generated C goes under build/: it depends on the picows at hand and is never committed
        return cythonize([ext], compiler_directives=DIRECTIVES, build_dir="build/picows")
    except Exception as exc:  # noqa: BLE001 - a picows whose declarations this source no longer fits
        print(f"* pm_ws._picows_listener left out: {exc} *", file=sys.stderr)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
