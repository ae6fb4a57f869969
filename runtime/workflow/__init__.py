"""The FlowWeaver-style workflow layer: ``@task`` DAGs compiled onto the graph runtime."""

from .executors import AsyncExecutor as AsyncExecutor
from .executors import Executor as Executor
from .executors import SequentialExecutor as SequentialExecutor
from .executors import ThreadedExecutor as ThreadedExecutor
from .stores import JSONStateStore as JSONStateStore
from .stores import PostgresStateStore as PostgresStateStore
from .stores import SQLiteStateStore as SQLiteStateStore
from .stores import StateStore as StateStore
from .stores import TaskRecord as TaskRecord
from .task import Task as Task
from .task import TaskStatus as TaskStatus
from .task import WorkflowStatus as WorkflowStatus
from .task import task as task
from .workflow import TaskView as TaskView
from .workflow import Workflow as Workflow
