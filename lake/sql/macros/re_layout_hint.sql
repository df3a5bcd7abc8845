-- Layout: trailing blanks at line ends go, a run of blanks after a word becomes one space (indentation at
-- the start of a line stays: code keeps its shape), at most one empty line in a row, no blanks at the ends.
CREATE OR REPLACE MACRO re_layout_hint() AS '[ \t]\n|\S(?:[ \t][ \t]|\t)|\n\n\n|^\s|\s$';
