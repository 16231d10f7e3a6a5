"""Figures (matplotlib, Agg; one file per call): the shared saver and panel grids
(`figures`), and the figures of each stage (`compare`, `attribution`, `catalogue`,
`generative`)."""
