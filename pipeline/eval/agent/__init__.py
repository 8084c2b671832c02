"""Agentic suites: LAB-format tasks worked through tools in a workspace, graded per criterion.

``lab`` loads and checks the task folders; ``workspace`` and ``sandbox`` are the agent's tools;
``models`` its chat turn (an endpoint or an in-process model); ``loop`` the turn loop and its
transcript; ``grade`` LAB's one-judge-call-per-criterion protocol; ``runner`` ties them into an
``EvalResult``. Only ``lab`` is imported eagerly (the suite loader needs it).
"""
