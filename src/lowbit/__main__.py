from lowbit.cli import main

# Guarded: backends such as vLLM start worker processes with `spawn`, which re-imports the main module.
if __name__ == "__main__":
    raise SystemExit(main())
