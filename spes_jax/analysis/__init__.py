"""What is done with explanations once they exist: faithfulness metrics (deletion, insertion, size),
the paper's comparison of methods, plausibility analyses and figures."""
