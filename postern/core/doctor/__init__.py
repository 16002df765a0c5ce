"""``postern doctor``: checks of an installation, each explaining what it found and what
to do (``checks``), the finding they report (``report``), and the reachability probes
backends build theirs with (``probes``). Nothing here changes the installation."""
