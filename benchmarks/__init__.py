"""Benchmarks of hpsearch, beside what they measured (results/) and the data they read (yahpo_data/). They run from
a checkout (`python -m benchmarks.NAME` or `python benchmarks/NAME.py`) and are not part of the installed package.
A regular package rather than a namespace one: any installed top-level `benchmarks` package would shadow a
namespace package of that name."""
