"""RCS keystore replication check: is every Recording Crypto Server's keystore the same file?"""
