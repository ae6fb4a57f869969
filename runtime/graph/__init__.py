"""Graph and state: building and compiling a graph, the state it carries, and what nodes return."""
