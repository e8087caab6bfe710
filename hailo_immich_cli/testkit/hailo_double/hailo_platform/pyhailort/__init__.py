"""pyhailort package of the test double."""
