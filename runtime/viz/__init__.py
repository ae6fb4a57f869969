"""Pictures of graphs: Mermaid text, a self-contained HTML page, and its live view of a run."""

from .mermaid import export_mermaid, save_mermaid
from .page import mermaid_page, view_mermaid

__all__ = ["export_mermaid", "mermaid_page", "save_mermaid", "view_mermaid"]
