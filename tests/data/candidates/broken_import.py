import gptoss_port_that_is_not_installed  # noqa: F401  (verify must say the candidate cannot be imported)
