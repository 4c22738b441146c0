"""``python -m mobilevit_trt <command> [options]``: the ``mobilevit-trt`` command line without the console script."""
from mobilevit_trt.commands import main

if __name__ == "__main__":
    main(prog="python -m mobilevit_trt")
