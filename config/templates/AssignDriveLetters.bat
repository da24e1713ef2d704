@echo off
rem AssignDriveLetters.bat for {{ node.hostname }}{% if cluster %} (cluster {{ cluster.name }}){% endif %}, rendered by netdeploy.

rem Gives the shared disks their cluster drive letters (diskpartparams.txt beside this file),
rem then logs what diskpart saw, so a wrong letter can be traced after the fact.
set LOG=%SystemRoot%\Temp\netdeploy-diskpart.log
diskpart /s "%~dp0diskpartparams.txt" > "%LOG%" 2>&1
if errorlevel 1 (
    echo netdeploy: diskpart failed, see %LOG%
    exit /b 1
)
exit /b 0
