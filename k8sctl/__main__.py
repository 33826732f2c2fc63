from k8sctl.cli import main

main()
