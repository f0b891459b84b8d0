"""Scaling studies: study file -> IsoFLOP grid -> Tune trials -> fits -> prediction -> verification."""
