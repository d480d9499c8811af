"""Real recorded data sets the tests run end to end, read out of a package that ships them."""
