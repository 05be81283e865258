import sys

from spanet2.cli import main

sys.exit(main())
