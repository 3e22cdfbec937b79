"""The documents p3s keeps in MongoDB, with the indexes its hot paths need.

The documents declare the schema and the indexes. Hot paths write through the raw collection
(``Model._get_collection()``) with one explicit atomic update each, so that what reaches the
database is exactly the update MongoDB documents as valid.
"""
from __future__ import annotations

import datetime as _dt

import mongoengine as me

from p3s import states


def utcnow() -> _dt.datetime:
    """Now in UTC, naive, to the millisecond (what MongoDB keeps)."""
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


_NO_AUTO_INDEX = {"auto_create_index": False}


class Job(me.Document):
    """One payload to run. Created by clients or by a workflow; brokered to one pilot."""

    uuid = me.StringField(primary_key=True)
    name = me.StringField(default="")
    user = me.StringField(default="")
    owner = me.StringField(null=True)            # the creating token's name: who may change it
    jobtype = me.StringField(default="default")
    payload = me.StringField(required=True)
    params = me.StringField(default="")
    env = me.DictField()
    secret_env = me.ListField(me.StringField())  # env names whose values the API never shows
    priority = me.IntField(default=0)
    timelimit = me.IntField(required=True)
    state = me.StringField(choices=states.JOB_STATES, default=states.DEFINED)
    site = me.StringField(default="")            # required site; '' = any
    seq = me.IntField(required=True)             # FIFO order within a priority
    input_file = me.StringField(default="")
    workflow = me.StringField(null=True)
    vertex = me.StringField(null=True)           # the DAG vertex this job instantiates
    noop = me.BooleanField(default=False)        # a NOOP vertex: finishes without running
    children = me.ListField(me.StringField())    # jobs of the vertices that depend on this one
    n_parents = me.IntField(default=0)           # distinct parent vertices
    n_parents_done = me.IntField(default=0)      # of which finished (advanced atomically)
    max_attempts = me.IntField(default=1)
    attempts = me.IntField(default=0)
    # filled in at dispatch and by the pilot's reports
    pilot = me.StringField(null=True)
    host = me.StringField(null=True)
    pilot_site = me.StringField(null=True)
    pid = me.IntField(null=True)
    exit_code = me.IntField(null=True)
    error = me.StringField(null=True)            # why it ended unsuccessfully, in words
    kill_requested = me.BooleanField(default=False)
    ts_def = me.DateTimeField()
    ts_dis = me.DateTimeField(null=True)
    ts_sta = me.DateTimeField(null=True)
    ts_sto = me.DateTimeField(null=True)
    usage = me.DictField()                       # summary: peak_rss, cpu_time, ...
    usage_series = me.ListField(me.DictField())  # bounded time series of heartbeats
    log_dir = me.StringField(null=True)          # where the pilot wrote <uuid>.out/.err
    stdout_tail = me.StringField(null=True)
    stderr_tail = me.StringField(null=True)
    # freshness (p3s.freshness): when its data arrived, its type's ETA, arrived + ETA, why dropped
    arrived = me.DateTimeField(null=True)
    eta = me.IntField(null=True)
    deadline = me.DateTimeField(null=True)
    dropped = me.StringField(null=True)          # stale or shed
    output_dir = me.StringField(null=True)       # $P3S_OUTPUT_DIR on the pilot's host

    meta = {
        "collection": "jobs",
        "indexes": [
            ("state", "seq"),
            ("pilot", "state"),
            ("workflow", "state"),
            ("jobtype", "state"),
            ("state", "deadline"),
            ("jobtype", "state", "-ts_sto"),
            "-ts_def",
            "user",
            "name",
        ],
        **_NO_AUTO_INDEX,
    }


class Pilot(me.Document):
    """An agent on a worker node that asks for jobs and runs them."""

    uuid = me.StringField(primary_key=True)
    host = me.StringField(default="")
    site = me.StringField(default="")
    pid = me.IntField(null=True)
    extra = me.StringField(default="")           # e.g. the batch system's job id
    jobtypes = me.ListField(me.StringField())    # empty = any jobtype
    registrar = me.StringField(default="")       # name of the bootstrap token that registered it
    state = me.StringField(choices=states.PILOT_STATES, default=states.IDLE)
    job = me.StringField(null=True)              # current job
    njobs = me.IntField(default=0)               # jobs run so far
    kill_requested = me.BooleanField(default=False)
    kill_job = me.StringField(null=True)         # a job of this pilot's to stop
    version = me.StringField(default="")
    ts_reg = me.DateTimeField()
    ts_lhb = me.DateTimeField()                  # last contact
    ts_stop = me.DateTimeField(null=True)
    usage = me.DictField()
    reason = me.StringField(null=True)           # why it stopped or was lost

    meta = {"collection": "pilots", "indexes": [("state", "ts_lhb"), "host", "site"], **_NO_AUTO_INDEX}


class DataType(me.Document):
    """A kind of data file; its extension is used to generate file names."""

    name = me.StringField(primary_key=True)
    ext = me.StringField(default="")
    comment = me.StringField(default="")
    meta = {"collection": "datatypes", **_NO_AUTO_INDEX}


class DataFile(me.Document):
    """One data file: registered by a client or the injector, or an edge of a workflow."""

    uuid = me.StringField(primary_key=True)
    name = me.StringField(required=True)
    dirpath = me.StringField(default="")
    datatype = me.StringField(default="")
    state = me.StringField(default="defined")
    comment = me.StringField(default="")
    metadata = me.DictField()
    size = me.IntField(null=True)
    owner = me.StringField(null=True)
    workflow = me.StringField(null=True)
    datatag = me.StringField(null=True)
    edge = me.StringField(null=True)             # the template edge this file instantiates
    source = me.StringField(null=True)           # producing vertex / job
    target = me.StringField(null=True)
    source_job = me.StringField(null=True)
    target_job = me.StringField(null=True)
    ts_reg = me.DateTimeField()
    ts_upd = me.DateTimeField()
    arrived = me.DateTimeField(null=True)        # when the file arrived (injector: first seen complete)

    meta = {"collection": "data", "indexes": ["name", "workflow", "datatype", "-ts_reg", "source_job"],
            **_NO_AUTO_INDEX}


class JobType(me.Document):
    """Per-jobtype settings: the limit on dispatched+running jobs (None = no limit)."""

    name = me.StringField(primary_key=True)
    limit = me.IntField(null=True)
    comment = me.StringField(default="")
    # freshness policies (None: the configuration's jobtype_defaults, else off)
    eta = me.IntField(null=True)                 # seconds from arrival
    order = me.StringField(null=True)            # fifo or newest-first
    stale = me.BooleanField(null=True)           # drop jobs past their deadline before they run
    stop_running = me.BooleanField(null=True)    # ... and stop running ones past it
    shed = me.BooleanField(null=True)            # drop at admission what cannot meet its ETA
    alarm_within_eta = me.FloatField(null=True)  # alarm when the share within ETA is below this
    meta = {"collection": "jobtypes", **_NO_AUTO_INDEX}


class Site(me.Document):
    """A place pilots run: nominal pilot count and the parameters pilots bootstrap from."""

    name = me.StringField(primary_key=True)
    pilots = me.IntField(default=1)              # nominal pilot population
    period = me.IntField(default=10)             # seconds between job requests when idle
    beat = me.IntField(default=10)               # heartbeat seconds while a job runs
    cycles = me.IntField(default=3)              # idle requests before a pilot stops; 0 = forever
    lifetime = me.IntField(default=90000)        # expected pilot lifetime (alarms)
    server = me.StringField(default="")
    env = me.DictField()
    comment = me.StringField(default="")
    meta = {"collection": "sites", **_NO_AUTO_INDEX}


class DagTemplate(me.Document):
    """A workflow template (a DAG of jobs and data edges), stored by name and version."""

    key = me.StringField(primary_key=True)       # "<name>:<version>"
    name = me.StringField(required=True)
    version = me.IntField(required=True)
    description = me.StringField(default="")
    user = me.StringField(default="")
    spec = me.DictField()                        # p3s.dag.Template.to_dict()
    nvertices = me.IntField(default=0)
    nedges = me.IntField(default=0)
    workflows = me.IntField(default=0)           # instantiations so far: used templates are immutable
    ts_def = me.DateTimeField()
    meta = {"collection": "templates", "indexes": [("name", "-version")], **_NO_AUTO_INDEX}


class Workflow(me.Document):
    """An instance of a template: its jobs and data records carry its uuid."""

    uuid = me.StringField(primary_key=True)
    name = me.StringField(default="")
    description = me.StringField(default="")
    user = me.StringField(default="")
    owner = me.StringField(null=True)
    template = me.StringField(required=True)
    template_version = me.IntField(required=True)
    state = me.StringField(choices=states.WORKFLOW_STATES, default=states.WF_TEMPLATE)
    njobs = me.IntField(default=0)
    ndone = me.IntField(default=0)               # jobs finished
    vertices = me.DictField()                    # vertex name -> job uuid
    roots = me.ListField(me.StringField())       # jobs started first
    error = me.StringField(null=True)            # what made it fail
    arrived = me.DateTimeField(null=True)        # earliest arrival of its input files
    ts_def = me.DateTimeField()
    ts_sta = me.DateTimeField(null=True)
    ts_sto = me.DateTimeField(null=True)
    meta = {"collection": "workflows", "indexes": [("state", "-ts_def"), "template", "-ts_def"], **_NO_AUTO_INDEX}


class Event(me.Document):
    """The server's log of notable happenings: lost pilots, kills, timeouts, operator notes."""

    ts = me.DateTimeField()
    kind = me.StringField(required=True)         # e.g. pilot.lost, job.timelimit, note
    severity = me.StringField(default="info")    # info, warning, error
    message = me.StringField(default="")
    job = me.StringField(null=True)
    pilot = me.StringField(null=True)
    site = me.StringField(null=True)
    source = me.StringField(default="server")
    data = me.DictField()
    meta = {"collection": "events", "indexes": ["-ts", ("kind", "-ts")], **_NO_AUTO_INDEX}


ALL_MODELS = (Job, Pilot, DataType, DataFile, JobType, Site, DagTemplate, Workflow, Event)


def ensure_indexes() -> None:
    """Create every index the server's queries rely on (idempotent)."""
    for model in ALL_MODELS:
        model.ensure_indexes()
