"""Train and evaluate a recbole-sada (or RecBole) model, offline (the same as ``python -m recbole_sada``
or the ``recbole-sada`` command of an installed package).

    python run_recbole_sada.py --model=SADASASRec --dataset=ml-100k [--config_files="a.yaml b.yaml"] [--key=value ...]
        [--result_json=run.json]

Exit status: 0 on success, 2 with a one-line message on bad input, 130 on Ctrl-C.
"""
import sys

from recbole_sada.__main__ import format_table, main, parse_args, write_result_json  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
