"""Long Markdown answers of each shape a model streams: a list, a code block, a table, prose."""

LIST = "Fruits:\n\n" + "".join(f"{i}. Fruit number {i}\n" for i in range(1, 201)) + "\nThat is all.\n"
CODE = "Here:\n\n```python\n" + "".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(120)) + "```\nDone.\n"
TABLE = ("Countries:\n\n| # | country | capital |\n|---|:---|---:|\n"
         + "".join(f"| {i} | Country {i} | Capital {'x' * (i % 9)} |\n" for i in range(150)) + "\nAfter the table.\n")
PROSE = "".join(f"Sentence {i} about a dragon who bakes bread. " + ("\n\n" if i % 6 == 5 else "")
                for i in range(400))
NESTED = "".join(f"- item {i}\n  - sub {i}\n    continued text\n" for i in range(80))
TILDES = "~~~~\n" + "".join(f"line {i}\n~~~ not a close\n" for i in range(60)) + "~~~~\nend\n"
