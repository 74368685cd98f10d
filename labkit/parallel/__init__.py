"""The parallelisms and their calculators: data (`data`), tensor, pipeline, serving, memory per device (`memory`),
and the overlap and serving models of large language models (`llm`). All run on `labkit.comm` and
`labkit.collectives`."""
