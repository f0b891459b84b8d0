"""Scaling studies: study file -> IsoFLOP grid -> Tune trials -> fits -> prediction -> verification.

:mod:`~raylm.study.run` is the one straight line (grid -> train -> fit -> verify -> log) on a
:class:`~raylm.tune.session.DriverSession`; :mod:`~raylm.study.analysis` is pure (points in,
fits, recommendation and metrics out); :mod:`~raylm.study.publish` writes the parent run;
:mod:`~raylm.study.results` holds the data types; :mod:`~raylm.study.summary` the console text.
"""
