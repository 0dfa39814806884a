"""``python -m bench``: run the benchmark suite (see ``bench/README.md``);
``python -m bench server``: the update server under load."""

import sys

if sys.argv[1:2] == ["server"]:
    from bench.server import main as server_main

    raise SystemExit(server_main(sys.argv[2:]))

from bench.run import main

raise SystemExit(main())
