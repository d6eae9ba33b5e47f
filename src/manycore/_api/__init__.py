"""What ``import manycore`` offers for running work: ``Pool``, ``mc.map`` and its
siblings, the default pools, ``amap``, ``backend="auto"``, ``mc.profile``, and the
argument checks that run before any work starts."""
