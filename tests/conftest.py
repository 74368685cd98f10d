import os

# Tests never download anything: the data loader must fall back to what is on the machine.
os.environ["LABKIT_OFFLINE"] = "1"
