# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
