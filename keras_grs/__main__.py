import sys

from keras_grs.cli import main

sys.exit(main())
