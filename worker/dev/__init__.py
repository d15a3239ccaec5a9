"""For trying the worker and feeding it, never for running it: kata traffic, the local
SQS server (moto, the `demo` extra) and `nps-worker demo`. `nps-worker run` and
`worker.app` import nothing from here."""
