from qwen_chat.cli.main import main

raise SystemExit(main())
