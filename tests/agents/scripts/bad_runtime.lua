-- a declaration with a bad name
agent { name = 5 }
