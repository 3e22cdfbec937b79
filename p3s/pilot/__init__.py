"""The pilot: everything that runs on a worker node, in one package.

It imports nothing else of p3s and nothing outside Python's standard library (psutil is used when
present), so that ``p3s-fleet`` can ship it to a bare node as one zipapp:

- ``agent``: register, ask for work, run it, report (the pilot proper);
- ``payload``: one job's subprocess, its usage and its time limit;
- ``guard``: the orphan guard that kills the payload if the pilot dies;
- ``client``: the HTTP client library, shared with every p3s command.
"""
