"""Events: what a run says, the bus actor that stamps and fans it out, and the streams that read it."""
