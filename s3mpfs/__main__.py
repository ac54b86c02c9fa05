from s3mpfs.cli import main

raise SystemExit(main())
