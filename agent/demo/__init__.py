"""The built-in simulated platform and demo that `failsight demo` runs the agent against."""
