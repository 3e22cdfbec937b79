"""The fleet manager: ``p3s-fleet up / report / kill / top-up`` over host lists, through a backend."""
