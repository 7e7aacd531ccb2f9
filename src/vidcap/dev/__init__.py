"""Developer tools: tiny random-weight model builders (`vidcap dev tiny-model`)."""
