"""The one compiled module, klinelake.core._rest_page (the backfill's row path, issue 15).

Optional: where it cannot be built (no C compiler) the package works unchanged on its pure
Python path (klinelake/core/row.py falls back), only slower; every entry point's `--version`
says which.
Everything else about the distribution is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "klinelake.core._rest_page",
            ["klinelake/core/_rest_page.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
